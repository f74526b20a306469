"""The sequence the model reads: input tokens, then one placeholder per answer token.

As in the length-generalization literature (Deletang et al. 2023), the model is not
autoregressive: an input of length n with an answer of m tokens becomes
`x_1 .. x_n ANSWER x m PAD ..`, and the answer is predicted at the m placeholders. Token
ids: the task's inputs 0..V-1, ANSWER = V, PAD = V + 1 (model vocabulary V + 2).
"""

import flax.struct
import jax
import jax.numpy as jnp

from pe_research.tasks.base import Batch


class Sequence(flax.struct.PyTreeNode):
  """tokens int32[B, T]; valid bool[B, T] (real tokens); answer_index int32[B, O]."""

  tokens: jax.Array
  valid: jax.Array
  answer_index: jax.Array


def model_vocab_size(input_vocab_size: int) -> int:
  """Input tokens plus the ANSWER and PAD tokens."""
  return input_vocab_size + 2


def layout(batch: Batch, input_vocab_size: int) -> Sequence:
  """Places each example's input and answer slots in a [B, L + O] sequence."""
  max_length, max_output = batch.inputs.shape[1], batch.targets.shape[1]
  t = jnp.arange(max_length + max_output)
  lengths, outputs = batch.lengths[:, None], batch.output_lengths[:, None]
  inputs = jnp.pad(batch.inputs, ((0, 0), (0, max_output)))
  tokens = jnp.where(t < lengths, inputs, jnp.where(t < lengths + outputs, input_vocab_size, input_vocab_size + 1))
  answer_index = jnp.minimum(lengths + jnp.arange(max_output), max_length + max_output - 1)
  return Sequence(tokens=tokens.astype(jnp.int32), valid=t < lengths + outputs, answer_index=answer_index)
