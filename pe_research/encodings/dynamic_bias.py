"""Dynamic position bias: an MLP of the relative distance (Wang et al. 2021, "CrossFormer:
A Versatile Vision Transformer Hinging on Cross-scale Attention", arXiv 2108.00154; the
`DynamicPositionBias` of x-transformers).

    logits_h[i, j] += f_theta(d(i - j))_h,     d(r) = r, or sign(r) log(1 + |r|)

with f_theta: R -> R^H the shared `BiasMLP` (Linear(1, width) -> ReLU -> Linear(width, H)),
one per attention layer. Unlike T5's buckets or Shaw's clipped table it is defined at every
distance, also unseen ones (a ReLU MLP extrapolates linearly).

Conventions: the input is the signed query-minus-key offset i - j (so bidirectional
attention tells left from right; causal visible pairs have i - j >= 0).
`encoding.dynamic_bias.log_distance` switches to the log-spaced input of Swin Transformer
V2 (Liu et al. 2022, arXiv 2111.09883); default off, as CrossFormer and x-transformers.
Float positions are fine. The output layer starts at zero (see `bias_mlp`).
"""

from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, relative_offsets
from pe_research.encodings.bias_mlp import BiasMLP


class DynamicBias(Encoding):
  """A learned function of the relative offset, one bias per head."""

  acts_on_attention: ClassVar[bool] = True
  section = 'dynamic_bias'
  options = {
      # Hidden width of the MLP of the relative offset. 32: our choice, FIRE's width (its
      # reference's), so that the two learned functions of the offset have the same capacity;
      # x-transformers uses model_dim / 4 (16 at width 64) and two hidden layers.
      'mlp_width': 32,
      # Feed sign(r) log(1 + |r|) instead of the offset r (Swin V2's log-spaced input). False:
      # CrossFormer's and x-transformers' input, the offset itself.
      'log_distance': False,
  }

  def __init__(self, num_heads: int, rngs: nnx.Rngs, *, mlp_width: int = 32, log_distance: bool = False):
    self.log_distance = log_distance
    self.mlp = BiasMLP(mlp_width, num_heads, rngs)

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    width = config.dynamic_bias.mlp_width
    if not isinstance(width, int) or width < 1:
      raise ValueError(f'config.encoding.dynamic_bias.mlp_width={width!r} must be an integer >= 1')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    d = config.dynamic_bias
    return cls(dims.num_heads, rngs, mlp_width=d.mlp_width, log_distance=d.log_distance)

  def mlp_inputs(self, q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> jax.Array:
    """[B, T, S] d(i - j)."""
    offsets_BxTxS = relative_offsets(q_positions_BxT, k_positions_BxS).astype(jnp.float32)
    if self.log_distance:
      return jnp.sign(offsets_BxTxS) * jnp.log1p(jnp.abs(offsets_BxTxS))
    return offsets_BxTxS

  def bias(self, q_positions_BxT, k_positions_BxS):
    return self.mlp(self.mlp_inputs(q_positions_BxT, k_positions_BxS))
