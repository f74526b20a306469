"""Regular tasks (Deletang et al. 2023, "Neural Networks and the Chomsky Hierarchy")."""

import dataclasses

import jax
import jax.numpy as jnp

from pe_research.tasks.base import Task, random_tokens


@dataclasses.dataclass(frozen=True)
class ParityCheck(Task):
  """Is the number of ones in a bit string even (0) or odd (1)?

  Examples: `1010100 -> 1` (three ones), `0110 -> 0`.
  Vocabulary: inputs {0, 1}; answer {0, 1}. Output length 1 for every input length.
  Minimum length 1. Chance accuracy 1/2.
  """

  name = 'parity_check'
  level = 'regular'

  input_vocab_size = 2
  output_vocab_size = 2
  chance_accuracy = 0.5

  def output_length(self, length):
    return length * 0 + 1

  def sample_example(self, key, length, max_length):
    bits = random_tokens(key, 2, max_length)
    bits = jnp.where(jnp.arange(max_length) < length, bits, 0)
    return bits, (jnp.sum(bits) % 2)[None], jnp.ones((1,), bool)
