"""Sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need").

    PE[p, 2k]   = sin(p / base^(2k/d))
    PE[p, 2k+1] = cos(p / base^(2k/d)),   k = 0 .. d/2 - 1, base = 10000.

Convention: Vaswani's interleaved layout (sin and cos of one frequency side by side), not
Flax lm1b's [sin | cos] halves. Works on integer and float positions alike.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, require_even_model_dim


def sinusoid(positions: jax.Array, dim: int, base: float = 10000.0) -> jax.Array:
  """[..., dim] interleaved sin/cos codes of `positions` [...]; `dim` must be even."""
  if dim % 2:
    raise ValueError(f'a sinusoidal code needs an even width, got {dim}')
  inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], dim)


class Sinusoidal(Encoding):
  """Adds the sinusoid code to the token embeddings: x + PE[positions]."""

  acts_on_input = True
  section = 'sinusoidal'  # Also read by SinusoidalConcat and ScaledSinusoidal.
  options = {
      # Base of the sinusoid frequencies. 10000: Vaswani et al. 2017, PE(p, 2k) = sin(p / 10000^(2k/d)).
      'base': 10000.0,
  }

  def __init__(self, dim: int, base: float = 10000.0):
    if dim % 2:
      raise ValueError(f'sinusoidal encoding needs an even model width, got {dim}')
    self.dim = dim
    self.base = base

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    require_even_model_dim(config, dims)
    if not config.sinusoidal.base > 1:
      raise ValueError(f'config.encoding.sinusoidal.base={config.sinusoidal.base} must be > 1 (the wavelengths '
                       'grow as its powers)')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.model_dim, config.sinusoidal.base)

  def embed(self, x_BxTxD, positions_BxT):
    return x_BxTxD + sinusoid(positions_BxT, self.dim, self.base).astype(x_BxTxD.dtype)


class SinusoidalConcat(Sinusoidal):
  """Concatenates the sinusoid code to the token embeddings, then projects back:

      y = [x ; PE[p]] W,  W in R^{(D + D) x D}.

  Since [x ; PE] W = x W_x + PE W_p, this equals adding a *projected* position code
  (Kazemnejad et al. 2023 discuss the equivalence); the code width equals the model width.
  """

  def __init__(self, dim: int, rngs: nnx.Rngs, base: float = 10000.0):
    super().__init__(dim, base)
    self.projection = nnx.Linear(2 * dim, dim, rngs=rngs)

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.model_dim, rngs, config.sinusoidal.base)

  def embed(self, x_BxTxD, positions_BxT):
    code = sinusoid(positions_BxT, self.dim, self.base).astype(x_BxTxD.dtype)
    return self.projection(jnp.concatenate([x_BxTxD, code], axis=-1))


class ScaledSinusoidal(Sinusoidal):
  """The sinusoid code times a learned scalar gain g (Hua et al. 2022, "Transformer Quality
  in Linear Time", arXiv 2202.10447, appendix; x-transformers' ScaledSinusoidalEmbedding):

      y = x + g PE[p].

  The gain lets the model set the weight of positions against content. Convention: g starts
  at `encoding.scaled_sinusoidal.init_scale` (default 1); x-transformers starts at D^(-1/2)
  for token embeddings of that size, whereas ours are multiplied by sqrt(D) (unit size), so
  g = 1 keeps the plain sinusoidal encoding's ratio at initialisation.
  """

  section = 'scaled_sinusoidal'  # Besides sinusoidal.base.
  options = {
      # Initial learned gain g of the sinusoid code (uses sinusoidal.base). 1: our choice, so that
      # the model starts as the plain sinusoidal encoding (see the class docstring for why not
      # x-transformers' D^(-1/2)).
      'init_scale': 1.0,
  }

  def __init__(self, dim: int, base: float = 10000.0, init_scale: float = 1.0):
    super().__init__(dim, base)
    self.scale = nnx.Param(jnp.asarray(init_scale, jnp.float32))

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.model_dim, config.sinusoidal.base, config.scaled_sinusoidal.init_scale)

  def embed(self, x_BxTxD, positions_BxT):
    code = self.scale[...] * sinusoid(positions_BxT, self.dim, self.base)
    return x_BxTxD + code.astype(x_BxTxD.dtype)
