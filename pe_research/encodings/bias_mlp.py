"""A small MLP from a scalar function of (i, j) to one logit bias per head, shared by FIRE
and the dynamic position bias: Linear(1, width) -> ReLU -> Linear(width, H).

Initialisation: the hidden layer as PyTorch's nn.Linear, which the reference
implementations use (weights and biases uniform in +-1/sqrt(fan_in) = +-1), so the ReLU
kinks -b/w spread over the input range; Flax's zero bias would put every kink at 0 and make
the MLP linear on [0, 1], where FIRE's inputs lie. The output layer starts at zero, so the
bias starts at zero and the model starts as NoPE (as T5's zero-initialised table).
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp


class BiasMLP(nnx.Module):
  """f: R -> R^H applied elementwise to a [B, T, S] input, returned as [B, H, T, S]."""

  def __init__(self, width: int, num_heads: int, rngs: nnx.Rngs):
    if width < 1:
      raise ValueError(f'MLP width={width} must be >= 1')
    uniform = nnx.initializers.uniform(2.0)  # U[0, 2), shifted to U[-1, 1) below
    self.hidden = nnx.Linear(1, width, rngs=rngs,
                             kernel_init=lambda *a: uniform(*a) - 1.0, bias_init=lambda *a: uniform(*a) - 1.0)
    self.out = nnx.Linear(width, num_heads, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

  def __call__(self, inputs_BxTxS: jax.Array) -> jax.Array:
    hidden_BxTxSxW = jax.nn.relu(self.hidden(inputs_BxTxS[..., None].astype(jnp.float32)))
    return jnp.moveaxis(self.out(hidden_BxTxSxW), -1, 1)
