"""Relative position representations (Shaw, Uszkoreit and Vaswani 2018, "Self-Attention
with Relative Position Representations", arXiv 1803.02155).

    e_ij = (x_i W^Q) . (x_j W^K + a^K_ij) / sqrt(K)
    z_i  = sum_j alpha_ij (x_j W^V + a^V_ij),      alpha = softmax_j(e)
    a^K_ij = w^K[clip(j - i, k)],  a^V_ij = w^V[clip(j - i, k)],  clip(x, k) = max(-k, min(k, x))

with 2k + 1 learned vectors of width K for keys and for values, shared by the heads of a
layer (one pair of tables per layer, as in the paper); k = `encoding.shaw.max_distance`
(the paper finds no gain beyond k = 2 and uses k = 16 in its main models). Both terms read
the queries or the weights, so `attention_terms` gives the key term as a logit bias of q and
the value term as a function of the attention weights.

Conventions: offsets are key minus query (j - i), as the paper. Float positions (the
'random_continuous' sampler) are rounded to the nearest integer offset; beyond +-k every
offset shares the end vectors, so no table is ever indexed past its end. Tables start at
N(0, 0.02^2), so the model starts close to NoPE.
"""

import math
from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import AttentionTerms, Dims, Encoding, relative_offsets


def clipped_offsets(q_positions_BxT: jax.Array, k_positions_BxS: jax.Array, max_distance: int) -> jax.Array:
  """int32[B, T, S] row indices clip(j - i, -k, k) + k into a table of 2k + 1 vectors;
  float positions are rounded to the nearest integer offset."""
  offsets = -relative_offsets(q_positions_BxT, k_positions_BxS)
  if not jnp.issubdtype(offsets.dtype, jnp.integer):
    offsets = jnp.round(offsets)
  return (jnp.clip(offsets, -max_distance, max_distance) + max_distance).astype(jnp.int32)


class Shaw(Encoding):
  """Learned key and value vectors per clipped relative offset, added inside attention."""

  acts_on_attention: ClassVar[bool] = True
  section = 'shaw'
  options = {
      # Clipping distance k: offsets beyond +-k share the end vectors (paper: 16). 16: the k of
      # Shaw et al. 2018's main translation models (section 4); their ablation (table 3) finds
      # no gain beyond k = 2.
      'max_distance': 16,
  }

  def __init__(self, head_dim: int, max_distance: int, rngs: nnx.Rngs):
    if max_distance < 0:
      raise ValueError(f'shaw max_distance={max_distance} must be >= 0')
    self.max_distance = max_distance
    init = nnx.initializers.normal(0.02)
    self.key_table = nnx.Param(init(rngs.params(), (2 * max_distance + 1, head_dim)))
    self.value_table = nnx.Param(init(rngs.params(), (2 * max_distance + 1, head_dim)))

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    k = config.shaw.max_distance
    if not isinstance(k, int) or k < 1:
      raise ValueError(f'config.encoding.shaw.max_distance={k!r} must be an integer >= 1 (the paper: 2 to 16)')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.head_dim, config.shaw.max_distance, rngs)

  def attention_terms(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) -> AttentionTerms:
    index_BxTxS = clipped_offsets(q_positions_BxT, k_positions_BxS, self.max_distance)
    # q_i . w^K[r] for every table row r, then pick the row of each pair (i, j).
    per_row_BxHxTxR = jnp.einsum('bthk,rk->bhtr', q_BxTxHxK, self.key_table[...].astype(q_BxTxHxK.dtype))
    relative_BxHxTxS = jnp.take_along_axis(per_row_BxHxTxR, index_BxTxS[:, None], axis=-1)

    def value(weights_BxHxTxS):
      a_v_BxTxSxK = self.value_table[...].astype(weights_BxHxTxS.dtype)[index_BxTxS]
      return jnp.einsum('bhts,btsk->bthk', weights_BxHxTxS, a_v_BxTxSxK)

    return super().attention_terms(q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) + AttentionTerms(
        bias=relative_BxHxTxS / math.sqrt(q_BxTxHxK.shape[-1]), value=value)
