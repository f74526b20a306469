"""ALiBi, attention with linear biases (Press et al. 2022, "Train Short, Test Long").

    logits_h[i, j] += -m_h * (i - j)      (causal, j <= i)
    logits_h[i, j] += -m_h * |i - j|      (bidirectional; the symmetric x-transformers form)

Slopes: for H a power of two, m_h = 2^(-8h/H), h = 1..H. Otherwise, with c = 2^floor(log2 H),
slopes = S(c) ++ S(2c)[0::2][:H - c], S(n) = [2^(-8h/n)]_{h=1..n} (Press et al.'s code).
"""

import math

import flax.nnx as nnx

from pe_research.encodings.base import Dims, DistanceBias, Encoding


def alibi_slopes(num_heads: int) -> list[float]:
  """The per-head slopes m_h of Press et al., for any number of heads."""

  def geometric(n):
    return [2 ** (-8 * h / n) for h in range(1, n + 1)]

  c = 2 ** math.floor(math.log2(num_heads))
  return geometric(c) + geometric(2 * c)[0::2][: num_heads - c]


class ALiBi(Encoding):
  """A fixed, head-specific penalty linear in the distance; no input code."""

  acts_on_attention = True

  def __init__(self, num_heads: int, causal: bool):
    self.slopes = tuple(alibi_slopes(num_heads))
    self.causal = causal

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.num_heads, dims.causal)

  def bias(self, q_positions_BxT, k_positions_BxS) -> DistanceBias:
    # A description, which the fused CPU attention kernel computes from the positions.
    return DistanceBias(self.slopes, not self.causal, q_positions_BxT, k_positions_BxS)
