"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer", arXiv 2104.09864).

Each channel pair of q and k is rotated by the angle p * theta_k, theta_k = base^(-2k/d),
k = 0 .. d/2 - 1, so that <R(i) q, R(j) k> depends on i - j only.

Convention: half-split pairs (x_k, x_{k + d/2}) as in GPT-NeoX, LLaMA and Flax gemma;
the interleaved RoFormer pairing is the same up to a fixed permutation of channels.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding


def rope_frequencies(dim: int, base: float = 10000.0) -> jax.Array:
  """theta_k = base^(-2k/dim), k = 0 .. dim/2 - 1."""
  return base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)


def apply_rotary(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, frequencies: jax.Array) -> jax.Array:
  """Rotates the pairs (x_k, x_{k+K/2}) of x by positions * frequencies[k]."""
  angles = jnp.asarray(positions_BxT, jnp.float32)[:, :, None, None] * frequencies
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = jnp.split(x_BxTxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxHxK.dtype)


class RoPE(Encoding):
  """Rotates queries and keys by their positions; no input code, no bias."""

  acts_on_attention = True

  def __init__(self, head_dim: int, base: float = 10000.0):
    if head_dim % 2:
      raise ValueError(f'rope needs an even head width (model_dim / num_heads), got {head_dim}')
    self.head_dim = head_dim
    self.base = base

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    if dims.head_dim % 2:
      raise ValueError(
          f'head width config.model.model_dim / config.model.num_heads = {dims.head_dim} is odd; '
          f'encoding {config.name!r} rotates channel pairs and needs an even head width'
      )

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.head_dim, config.rope.base)

  def rotate(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS):
    frequencies = rope_frequencies(self.head_dim, self.base)
    return (
        apply_rotary(q_BxTxHxK, q_positions_BxT, frequencies),
        apply_rotary(k_BxSxHxK, k_positions_BxS, frequencies),
    )
