"""KERPLE, kernelized relative positional embeddings (Chi, Fan, Ramadge and Rudnicky 2022,
"KERPLE: Kernelized Relative Positional Embedding for Length Extrapolation", NeurIPS 2022,
arXiv 2205.09921).

A conditionally positive definite kernel of the distance |i - j|, with two learned positive
scalars per head, added to the logits (no input code):

    kerple_log:    b_h(i, j) = -r1_h * log(1 + r2_h * |i - j|),   r1, r2 > 0
    kerple_power:  b_h(i, j) = -r1_h * |i - j|^(r2_h),             r1 > 0, 0 < r2 <= 2

Conventions, as the reference code (`chijames/KERPLE`, `megatron/mpu/layers.py`): the
parameters are clamped on every forward pass to >= 0.01 (and the power's exponent to <= 2);
initialisation log: r1 ~ U(0, 2), r2 ~ U(0, 1); power: r1 (coefficient) ~ U(0, 1),
r2 (exponent) ~ U(0, 2). One pair of scalars per head and per layer. The same symmetric
kernel serves causal and bidirectional attention; float positions are fine.
"""

from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, relative_offsets

# Lower clamp of every KERPLE parameter, as the reference code.
MIN_PARAMETER = 0.01


def kerple_log_bias(distance: jax.Array, r1: jax.Array, r2: jax.Array) -> jax.Array:
  """-r1 log(1 + r2 d) for distances d >= 0 (broadcasting)."""
  return -r1 * jnp.log1p(r2 * distance)


def kerple_power_bias(distance: jax.Array, r1: jax.Array, r2: jax.Array) -> jax.Array:
  """-r1 d^r2 for distances d >= 0; 0 at d = 0 with finite gradients (d^r2 ln d -> 0)."""
  positive = distance > 0
  safe = jnp.where(positive, distance, 1.0)
  return jnp.where(positive, -r1 * safe**r2, 0.0)


class _Kerple(Encoding):
  """Shared body: per-head r1, r2 drawn uniformly, clamped, fed to `kernel`."""

  acts_on_attention: ClassVar[bool] = True
  # (low, high) of the uniform initialisation of r1 and of r2, and the largest r2.
  r1_init: ClassVar[tuple[float, float]]
  r2_init: ClassVar[tuple[float, float]]
  r2_max: ClassVar[float] = float('inf')

  def __init__(self, num_heads: int, rngs: nnx.Rngs):
    self.r1 = nnx.Param(jax.random.uniform(rngs.params(), (num_heads,), jnp.float32, *self.r1_init))
    self.r2 = nnx.Param(jax.random.uniform(rngs.params(), (num_heads,), jnp.float32, *self.r2_init))

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.num_heads, rngs)

  @staticmethod
  def kernel(distance, r1, r2):
    raise NotImplementedError

  def bias(self, q_positions_BxT, k_positions_BxS):
    distance_Bx1xTxS = jnp.abs(relative_offsets(q_positions_BxT, k_positions_BxS)).astype(jnp.float32)[:, None]
    r1 = jnp.maximum(self.r1[...], MIN_PARAMETER)[None, :, None, None]
    r2 = jnp.clip(self.r2[...], MIN_PARAMETER, self.r2_max)[None, :, None, None]
    return self.kernel(distance_Bx1xTxS, r1, r2)


class KerpleLog(_Kerple):
  """KERPLE's logarithmic variant: -r1 log(1 + r2 |i - j|)."""

  r1_init = (0.0, 2.0)
  r2_init = (0.0, 1.0)
  kernel = staticmethod(kerple_log_bias)


class KerplePower(_Kerple):
  """KERPLE's power variant: -r1 |i - j|^r2, 0 < r2 <= 2."""

  r1_init = (0.0, 1.0)
  r2_init = (0.0, 2.0)
  r2_max = 2.0
  kernel = staticmethod(kerple_power_bias)
