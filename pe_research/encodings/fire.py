"""FIRE, functional interpolation for relative positions (Li et al. 2024, "Functional
Interpolation for Relative Positions Improves Long Context Transformers", ICLR 2024,
arXiv 2310.04418).

    b_h(i, j) = f_theta( psi(i - j) / psi(max(L, i)) )_h,      psi(x) = log(c x + 1),

added to the logits, with f_theta: R -> R^H a small MLP (`BiasMLP`: Linear(1, 32) -> ReLU ->
Linear(32, H)), c > 0 a learned scalar (init 0.1) and L a learned threshold
L = |m * L_0| (m learned, init 1; L_0 = `encoding.fire.init_threshold`, 512 in the
reference code). Dividing by psi of the query position ("progressive interpolation") keeps
the MLP input in [0, 1] at any length: a long sequence maps onto the same input range as a
short one. One module (MLP, c, L) per attention layer, as the reference implementation.

Conventions:
  * psi takes |c x|, as the reference code, so the learned c may change sign freely.
  * The normaliser is psi(max(L, i, j)) + eps (eps = 1e-6 as the reference). On the causal
    pairs the paper defines (j <= i) this is the paper's psi(max(L, i)); taking j into
    account keeps every pair, also masked future ones, in range.
  * Causal attention: the input is psi(|i - j|) / psi(max(L, i, j)), in [0, 1].
    Bidirectional attention (the paper is causal only): the input keeps the sign of i - j,
    sign(i - j) psi(|i - j|) / psi(max(L, i, j)), in [-1, 1], so the MLP can tell keys
    before the query from keys after it.
  * Positions are assumed >= 0 (as every sampler makes them); floats are fine.
  * The MLP's output layer starts at zero (the bias starts at zero); see `bias_mlp`.
"""

from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, relative_offsets
from pe_research.encodings.bias_mlp import BiasMLP


class FIRE(Encoding):
  """A learned function of the log distance normalised by the log query position."""

  acts_on_attention: ClassVar[bool] = True
  section = 'fire'
  # The values of the reference implementation, mcleish7/arithmetic,
  # cramming/architectures/embeddings.py (class FIRE).
  options = {
      # Hidden width of the MLP of the normalised distance. 32: the reference's Linear(1, 32).
      'mlp_width': 32,
      # Initial c of psi(x) = log(c x + 1) (learned). 0.1: the reference's init_c.
      'init_c': 0.1,
      # L_0 of the learned threshold L = |m L_0|, m initialised to 1. 512: the reference's
      # threshold, a learned multiplier (starting at 1) times 512.
      'init_threshold': 512.0,
      # Added to the normaliser psi(max(L, i)). 1e-6: the reference's eps.
      'eps': 1e-6,
  }

  def __init__(
      self,
      num_heads: int,
      causal: bool,
      rngs: nnx.Rngs,
      *,
      mlp_width: int = 32,
      init_c: float = 0.1,
      init_threshold: float = 512.0,
      eps: float = 1e-6,
  ):
    self.causal = causal
    self.mlp = BiasMLP(mlp_width, num_heads, rngs)
    self.c = nnx.Param(jnp.asarray(init_c, jnp.float32))
    self.threshold_multiplier = nnx.Param(jnp.asarray(1.0, jnp.float32))
    self.init_threshold = init_threshold
    self.eps = eps

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    f = config.fire
    for field, value in (('mlp_width', f.mlp_width), ('init_c', f.init_c), ('init_threshold', f.init_threshold),
                         ('eps', f.eps)):
      if not value > 0:
        raise ValueError(f'config.encoding.fire.{field}={value!r} must be > 0')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    f = config.fire
    return cls(dims.num_heads, dims.causal, rngs, mlp_width=f.mlp_width, init_c=f.init_c,
               init_threshold=f.init_threshold, eps=f.eps)

  def mlp_inputs(self, q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> jax.Array:
    """[B, T, S] normalised distances fed to the MLP: in [0, 1] (causal) or [-1, 1]."""
    c = jnp.abs(self.c[...])
    psi = lambda x: jnp.log(c * x + 1)  # noqa: E731  (x >= 0)
    i = jnp.asarray(q_positions_BxT, jnp.float32)[:, :, None]
    j = jnp.asarray(k_positions_BxS, jnp.float32)[:, None, :]
    threshold = jnp.abs(self.threshold_multiplier[...] * self.init_threshold)
    normaliser_BxTxS = psi(jnp.maximum(threshold, jnp.maximum(i, j))) + self.eps
    distance_BxTxS = relative_offsets(q_positions_BxT, k_positions_BxS).astype(jnp.float32)
    inputs_BxTxS = psi(jnp.abs(distance_BxTxS)) / normaliser_BxTxS
    return inputs_BxTxS if self.causal else jnp.sign(distance_BxTxS) * inputs_BxTxS

  def bias(self, q_positions_BxT, k_positions_BxS):
    return self.mlp(self.mlp_inputs(q_positions_BxT, k_positions_BxS))
