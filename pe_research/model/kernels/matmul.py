"""x W with optional bfloat16 operands and a backward pass written for XLA:CPU.

    y = x W,   dx = g W^T,   dW = x^T g

The operands of the three products are rounded to `operand_dtype` (float32, or bfloat16 for
mixed precision: see `pe_research.model.dense`), which accumulate and return float32.
The backward is written by hand: its products run in YNNPACK, which wants row-major
operands; XLA, given dW = x^T g, folds the transpose into the product and then either copies
x^T in a slow transpose before it (float32) or, YNNPACK declining the folded product,
computes it in float32 (bfloat16; over vmapped seeds it fails). So on a CPU the transposes
come from a C++ kernel XLA cannot fold (`cpu_transpose.cc`), and dW is taken as (g^T x)^T
when g has fewer channels than x (the MLP's second layer: 64 against 256), to transpose the
narrower operand. Elsewhere the transposes are XLA's.
"""

import functools

import jax
import jax.numpy as jnp

from pe_research.model.kernels import cpu_kernels


def _product(a, b, operand_dtype, result_dtype):
  return jnp.matmul(a.astype(operand_dtype), b.astype(operand_dtype), preferred_element_type=result_dtype)


_TRANSPOSE_KERNELS = {'bfloat16': 'PeTransposeToBfloat16', 'float32': 'PeTransposeFloat32'}


def fused_transpose(rows_NxD, dtype):
  """The C++ transpose (CPU only: check `cpu_kernels.available()`)."""
  shape = (*rows_NxD.shape[:-2], rows_NxD.shape[-1], rows_NxD.shape[-2])
  return jax.ffi.ffi_call(_TRANSPOSE_KERNELS[jnp.dtype(dtype).name], jax.ShapeDtypeStruct(shape, dtype),
                          vmap_method='broadcast_all')(rows_NxD)


def transposed(rows_NxD: jax.Array, dtype) -> jax.Array:
  """float32 [..., N, D] -> [..., D, N] in `dtype` (bfloat16 or float32): on a CPU by the C++
  kernel, which XLA cannot fold into a product (module docstring); elsewhere in XLA."""
  in_xla = lambda rows: jnp.swapaxes(rows, -1, -2).astype(dtype)  # noqa: E731
  return cpu_kernels.fused_where_possible(functools.partial(fused_transpose, dtype=dtype), in_xla, rows_NxD)


def matmul(x_NxI: jax.Array, w_IxO: jax.Array, operand_dtype) -> jax.Array:
  """x [..., I] @ w [I, O] with both rounded to `operand_dtype`, accumulated and returned in
  the dtype of x and w promoted (float32 for a float32 model), with the hand-written
  backward (module docstring)."""
  return _matmul(x_NxI, w_IxO, jnp.dtype(operand_dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x_NxI, w_IxO, operand_dtype):
  return _product(x_NxI, w_IxO, operand_dtype, jnp.promote_types(x_NxI.dtype, w_IxO.dtype))


def _forward(x, w, operand_dtype):
  return _matmul(x, w, operand_dtype), (x, w)


def _backward(operand_dtype, residuals, g):
  x, w = residuals
  x_rows, g_rows = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  dx = _product(g, w.T, operand_dtype, g.dtype)
  if g_rows.shape[1] < x_rows.shape[1]:
    dw = transposed(_product(transposed(g_rows, operand_dtype), x_rows, operand_dtype, g.dtype), g.dtype)
  else:
    dw = _product(transposed(x_rows, operand_dtype), g_rows, operand_dtype, g.dtype)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul.defvjp(_forward, _backward)
