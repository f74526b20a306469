"""xPos, extrapolatable position embedding (Sun et al. 2022, "A Length-Extrapolatable
Transformer", arXiv 2212.10554).

RoPE times an exponential decay per channel pair k:

    q_n -> RoPE(q, n) * zeta_k^(n / B),    k_m -> RoPE(k, m) * zeta_k^(-m / B),
    zeta_k = (2k/d + gamma) / (1 + gamma),  gamma = 0.4, B = 512 (`scale_base`),

so the logit of (n, m) carries zeta_k^((n - m) / B) < 1 for n > m: attention to far keys
decays. For m > n the factor grows instead, so xPos is defined for causal attention only
(`causal_only`; a bidirectional model is refused).

Conventions: RoPE's half-split pairs (x_k, x_{k + d/2}), both channels of pair k scaled by
zeta_k (torchscale pairs interleaved channels; the same up to a channel permutation).
Positions are centred per example on its first key position c before exponentiation,
(n - c) / B and -(m - c) / B, to keep the factors small at long or randomized positions;
the centring cancels in every logit, as in torchscale and x-transformers, which centre on
the middle of the sequence. Float positions are fine.
"""

from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, require_even_head_dim
from pe_research.encodings.rope import apply_rotary, rope_frequencies


def xpos_decay_bases(dim: int, gamma: float = 0.4) -> jax.Array:
  """zeta_k = (2k/dim + gamma) / (1 + gamma), k = 0 .. dim/2 - 1."""
  return (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim + gamma) / (1 + gamma)


def _scale_pairs(x_BxTxHxK: jax.Array, factors_BxTxF: jax.Array) -> jax.Array:
  """Multiplies channels k and k + K/2 by factors[..., k]."""
  both = jnp.concatenate([factors_BxTxF, factors_BxTxF], axis=-1)[:, :, None, :]
  return (x_BxTxHxK * both).astype(x_BxTxHxK.dtype)


class XPos(Encoding):
  """RoPE with a per-pair exponential decay in the distance; causal only."""

  acts_on_attention: ClassVar[bool] = True
  causal_only: ClassVar[bool] = True
  section = 'xpos'
  options = {
      # Base of the rotary frequencies. 10000: RoPE's (Su et al. 2021), which xPos builds on.
      'base': 10000.0,
      # B: the decay zeta^((n - m) / B) per channel pair (paper: 512). 512: Sun et al. 2022.
      'scale_base': 512.0,
      # gamma of zeta_k = (2k/d + gamma) / (1 + gamma) (paper: 0.4). 0.4: Sun et al. 2022.
      'gamma': 0.4,
  }

  def __init__(self, head_dim: int, base: float = 10000.0, scale_base: float = 512.0, gamma: float = 0.4):
    if head_dim % 2:
      raise ValueError(f'xpos needs an even head width (model_dim / num_heads), got {head_dim}')
    self.head_dim = head_dim
    self.base = base
    self.scale_base = scale_base
    self.gamma = gamma

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    require_even_head_dim(config, dims)
    x = config.xpos
    for field in ('base', 'scale_base', 'gamma'):
      if not x[field] > 0:
        raise ValueError(f'config.encoding.xpos.{field}={x[field]!r} must be > 0')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    x = config.xpos
    return cls(dims.head_dim, x.base, x.scale_base, x.gamma)

  def decay_factors(self, positions_BxT: jax.Array, centre_B: jax.Array, sign: float) -> jax.Array:
    """[B, T, K/2] zeta_k^(sign * (p - c) / B)."""
    exponent_BxT = sign * (jnp.asarray(positions_BxT, jnp.float32) - centre_B[:, None]) / self.scale_base
    return xpos_decay_bases(self.head_dim, self.gamma) ** exponent_BxT[..., None]

  def rotate(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS):
    frequencies = rope_frequencies(self.head_dim, self.base)
    centre_B = jnp.asarray(k_positions_BxS[:, 0], jnp.float32)
    q_BxTxHxK = _scale_pairs(apply_rotary(q_BxTxHxK, q_positions_BxT, frequencies),
                             self.decay_factors(q_positions_BxT, centre_B, 1.0))
    k_BxSxHxK = _scale_pairs(apply_rotary(k_BxSxHxK, k_positions_BxS, frequencies),
                             self.decay_factors(k_positions_BxS, centre_B, -1.0))
    return q_BxTxHxK, k_BxSxHxK
