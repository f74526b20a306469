"""Transformer-XL relative positions (Dai et al. 2019, "Transformer-XL: Attentive Language
Models Beyond a Fixed-Length Context", arXiv 1901.02860): the "relative" encoding of
Deletang et al. 2023 and Ruoss et al. 2023.

    logit_ij = [ q_i . k_j + u . k_j + (q_i + v) . W_R R_{i-j} ] / sqrt(K)
               (a)           (c)      (b) + (d)

with R_r the sinusoid code of the offset r = i - j (width D, Vaswani's interleaved layout
of `sinusoidal.sinusoid`), W_R a learned D -> H*K projection, and u, v learned per head
(the content and position biases). One W_R, u, v per layer, as Deletang et al.'s code
(the paper shares u, v across layers); u, v start at N(0, 0.02^2).

Computation: the (b)+(d) term is evaluated without building R_{i-j} for every pair. With
a_f = w_f i and b_f = w_f j, sin(a - b) and cos(a - b) expand into products of sin/cos of a
and of b, so (q_i + v) W_R R_{i-j} = sum_f cos(b_f) A_if + sin(b_f) B_if for query features
A, B: memory O(B T H D) instead of O(B T S D), exact for any positions. This is also what
lets it take randomized positions: there is no table of offsets to index past (the
original randomized-relative code indexed past its table and merged all offsets >= 0);
every offset, integer or float, gets its own code. Works causal and bidirectional.
"""

import math
from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import AttentionTerms, Dims, Encoding, require_even_model_dim


class XLRelative(Encoding):
  """Transformer-XL's sinusoidal relative logits with content and position biases."""

  acts_on_attention: ClassVar[bool] = True
  section = 'xl_relative'
  options = {
      # Base of the sinusoid code of relative offsets. 10000: Dai et al. 2019 take R from the
      # sinusoid code of Vaswani et al. 2017.
      'base': 10000.0,
  }

  def __init__(self, model_dim: int, num_heads: int, rngs: nnx.Rngs, base: float = 10000.0):
    if model_dim % 2:
      raise ValueError(f'xl_relative needs an even model width for its sinusoid code, got {model_dim}')
    head_dim = model_dim // num_heads
    self.num_heads, self.head_dim, self.code_dim, self.base = num_heads, head_dim, model_dim, base
    init = nnx.initializers.normal(0.02)
    self.content_bias = nnx.Param(init(rngs.params(), (num_heads, head_dim)))  # u
    self.position_bias = nnx.Param(init(rngs.params(), (num_heads, head_dim)))  # v
    self.projection = nnx.Linear(model_dim, num_heads * head_dim, use_bias=False, rngs=rngs)  # W_R

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    require_even_model_dim(config, dims)
    if not config.xl_relative.base > 1:
      raise ValueError(f'config.encoding.xl_relative.base={config.xl_relative.base} must be > 1')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.model_dim, dims.num_heads, rngs, config.xl_relative.base)

  def _angles(self, positions_BxT: jax.Array) -> jax.Array:
    """[B, T, D/2] w_f p with w_f = base^(-2f/D), the frequencies of `sinusoid`."""
    inv_freq = self.base ** (-jnp.arange(0, self.code_dim, 2, dtype=jnp.float32) / self.code_dim)
    return jnp.asarray(positions_BxT, jnp.float32)[..., None] * inv_freq

  def attention_terms(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) -> AttentionTerms:
    q_BxTxHxK = q_BxTxHxK.astype(jnp.float32)
    content_BxHx1xS = jnp.einsum('hk,bshk->bhs', self.content_bias[...], k_BxSxHxK.astype(jnp.float32))[:, :, None]
    # (q_i + v) W_R, as coefficients on the D channels of R: sin at even, cos at odd indices.
    w_DxHxK = self.projection.kernel[...].reshape(self.code_dim, self.num_heads, self.head_dim)
    coef_BxTxHxD = jnp.einsum('bthk,dhk->bthd', q_BxTxHxK + self.position_bias[...], w_DxHxK)
    c_sin, c_cos = coef_BxTxHxD[..., 0::2], coef_BxTxHxD[..., 1::2]
    a_BxTx1xF = self._angles(q_positions_BxT)[:, :, None]
    b_BxSxF = self._angles(k_positions_BxS)
    # c_sin sin(a - b) + c_cos cos(a - b) = cos b (c_sin sin a + c_cos cos a) + sin b (c_cos sin a - c_sin cos a).
    with_cos_b = c_sin * jnp.sin(a_BxTx1xF) + c_cos * jnp.cos(a_BxTx1xF)
    with_sin_b = c_cos * jnp.sin(a_BxTx1xF) - c_sin * jnp.cos(a_BxTx1xF)
    position_BxHxTxS = (jnp.einsum('bthf,bsf->bhts', with_cos_b, jnp.cos(b_BxSxF))
                        + jnp.einsum('bthf,bsf->bhts', with_sin_b, jnp.sin(b_BxSxF)))
    relative_BxHxTxS = (content_BxHx1xS + position_BxHxTxS) / math.sqrt(self.head_dim)
    return super().attention_terms(q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) + AttentionTerms(
        bias=relative_BxHxTxS)
