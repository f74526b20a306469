"""CoPE, contextual position encoding (Golovneva, Wang, Weston and Sukhbaatar 2024,
"Contextual Position Encoding: Learning to Count What's Important", arXiv 2405.18719).

Positions are counted in context: a gate decides which keys count, and the position of key
j seen from query i is the number of counted keys between them:

    g_ij = sigmoid(q_i . k_j / sqrt(K))               (masked pairs: g = 0)
    p_ij = min(sum_{t = j .. i} g_it, p_max - 1)
    z_i[p] = q_i . E[p],  p = 0 .. p_max - 1,         E in R^{p_max x K}
    z_i(p_ij) = (p - floor p) z_i[ceil p] + (1 - p + floor p) z_i[floor p]
    logits_ij = q_i . k_j / sqrt(K) + z_i(p_ij)

Conventions, as the paper's code: the gates read the same scaled, masked logits; the
interpolated term is added unscaled; E starts at zero (the model starts as NoPE) and is
shared by the heads of a layer, one table per layer; p_max = `encoding.cope.max_positions`.
Causal only (`causal_only`): the count runs from the key up to the query. CoPE ignores the
position arrays it is given, so every position sampler (randomized, float) leaves it
unchanged.
"""

from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import AttentionTerms, Dims, Encoding


def contextual_positions(gates_BxHxTxS: jax.Array, max_positions: int) -> jax.Array:
  """p_ij = min(sum_{t >= j} g_it, p_max - 1): gates of future and padding keys are zero,
  so the suffix sum over keys is the sum from j to i."""
  counts = jnp.flip(jnp.cumsum(jnp.flip(gates_BxHxTxS, -1), axis=-1), -1)
  return jnp.minimum(counts, max_positions - 1)


def interpolate_rows(z_BxHxTxP: jax.Array, p_BxHxTxS: jax.Array) -> jax.Array:
  """z at fractional indices p along its last axis, linearly between floor p and ceil p."""
  floor, ceil = jnp.floor(p_BxHxTxS), jnp.ceil(p_BxHxTxS)
  weight = p_BxHxTxS - floor
  at = lambda i: jnp.take_along_axis(z_BxHxTxP, i.astype(jnp.int32), axis=-1)  # noqa: E731
  return weight * at(ceil) + (1 - weight) * at(floor)


class CoPE(Encoding):
  """Adds q_i . E[p_ij] at the gated, contextual position p_ij; causal only."""

  acts_on_attention: ClassVar[bool] = True
  causal_only: ClassVar[bool] = True
  section = 'cope'
  options = {
      # p_max: contextual positions are clamped to p_max - 1. 64: our choice; the paper's code
      # takes p_max as an argument, set per task (x-transformers defaults to 16). A position
      # counts gated keys, at most the sequence's length: 64 covers the default run's training
      # sequences (up to 32 tokens) twice over; in :paper's longer ones (80 tokens for
      # reverse_string) counts above 63 share the last row.
      'max_positions': 64,
  }

  def __init__(self, head_dim: int, max_positions: int):
    if max_positions < 2:
      raise ValueError(f'cope max_positions={max_positions} must be >= 2')
    self.max_positions = max_positions
    self.table = nnx.Param(jnp.zeros((max_positions, head_dim), jnp.float32))

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    p = config.cope.max_positions
    if not isinstance(p, int) or p < 2:
      raise ValueError(f'config.encoding.cope.max_positions={p!r} must be an integer >= 2')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.head_dim, config.cope.max_positions)

  def positions(self, logits_BxHxTxS: jax.Array, mask_BxHxTxS: jax.Array) -> jax.Array:
    """[B, H, T, S] contextual positions p_ij of the scaled logits."""
    gates = jnp.where(mask_BxHxTxS, jax.nn.sigmoid(logits_BxHxTxS.astype(jnp.float32)), 0.0)
    return contextual_positions(gates, self.max_positions)

  def attention_terms(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) -> AttentionTerms:
    # The term reads the logits (its gates): a score function, not a bias.
    def score(logits_BxHxTxS, mask_BxHxTxS):
      p_BxHxTxS = self.positions(logits_BxHxTxS, mask_BxHxTxS)
      z_BxHxTxP = jnp.einsum('bthk,pk->bhtp', q_BxTxHxK.astype(jnp.float32), self.table[...])
      return logits_BxHxTxS + interpolate_rows(z_BxHxTxP, p_BxHxTxS).astype(logits_BxHxTxS.dtype)

    return super().attention_terms(q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) + AttentionTerms(
        score=score)
