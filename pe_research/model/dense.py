"""Dense layers with optional bfloat16 matmul operands (mixed precision).

    y = x W + b

`Dense` is `nnx.Linear`: the same parameters, initialization and values. With
`matmul_dtype='float32'` (the default) it computes what `nnx.Linear` does (the forward bit
for bit; the gradients summed in another order, so within float32 rounding). With
`matmul_dtype='bfloat16'`, x, W and the output gradient are rounded to bfloat16 for the
three products of the forward and backward pass, which accumulate and return float32 (what
`torch.autocast` does for a linear layer, gradients included; Micikevicius et al. 2018,
arXiv 1710.03740, with bfloat16 instead of float16 and so without loss scaling).
Parameters, optimizer state, LayerNorm, attention's softmax and every positional
computation stay float32. On a CPU with bfloat16 matrix units (AMX) the products run
faster in bfloat16 (docs/performance.md). The product and its backward pass, written for XLA:CPU, are
`pe_research.model.kernels.matmul`.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.model.kernels.matmul import matmul

MATMUL_DTYPES = ('float32', 'bfloat16')


def matmul_operand_dtype(name) -> jnp.dtype:
  """The dtype that `name` ('float32' or 'bfloat16', or such a dtype) names; a clear error
  for any other."""
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype is None or dtype.name not in MATMUL_DTYPES:
    raise ValueError(f'matmul_dtype={name!r} is unknown; allowed: {", ".join(MATMUL_DTYPES)}')
  return dtype


class Dense(nnx.Linear):
  """`nnx.Linear(in_features, out_features)` computed by `kernels.matmul.matmul` (module
  docstring), its operands rounded to `matmul_dtype` ('float32' or 'bfloat16')."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True, matmul_dtype='float32',
               rngs: nnx.Rngs):
    super().__init__(in_features, out_features, use_bias=use_bias, rngs=rngs)
    self.matmul_dtype = matmul_operand_dtype(matmul_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = matmul(x, self.kernel[...], self.matmul_dtype)
    return y if self.bias is None else y + self.bias[...]
