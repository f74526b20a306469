"""LayerNorm over the last axis (Ba et al. 2016, arXiv 1607.06450).

    y = (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * scale + bias

`LayerNorm` is `nnx.LayerNorm(num_features)`: the same parameters (scale, bias), the same
initialization and random keys drawn, the same values to float rounding; only the
computation differs: `layer_norm`, one C++ kernel call on a CPU for float32 and the
formula in XLA elsewhere (`pe_research.model.kernels.layer_norm`).
"""

import flax.nnx as nnx
import jax

from pe_research.model.kernels.layer_norm import layer_norm


class LayerNorm(nnx.LayerNorm):
  """`nnx.LayerNorm` over the last axis, computed by `kernels.layer_norm.layer_norm` (module docstring)."""

  def __init__(self, num_features: int, *, epsilon: float = 1e-6, rngs: nnx.Rngs):
    super().__init__(num_features, epsilon=epsilon, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return layer_norm(x, self.scale[...], self.bias[...], self.epsilon)
