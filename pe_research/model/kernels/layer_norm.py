"""LayerNorm as one C++ kernel call forward and one backward (`cpu_layer_norm.cc`).

    y = (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * scale + bias

On a CPU, for float32, XLA:CPU reduces each row in a separate YNNPACK call and passes over
the rows again for each elementwise step; the kernel reads a row once per pass. Elsewhere,
or without the kernels, `layer_norm` is the formula above in XLA (which fuses it on a GPU).
`pe_research.model.LayerNorm` calls `layer_norm`; docs/performance.md has what it buys.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pe_research.model.kernels import cpu_kernels


def in_xla(x, scale, bias, epsilon: float):
  """The formula of the module docstring in XLA."""
  centered = x - jnp.mean(x, axis=-1, keepdims=True)
  return centered * jax.lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + epsilon) * scale + bias


def _forward_call(x, scale, bias, epsilon):
  row = jax.ShapeDtypeStruct(x.shape[:-1], jnp.float32)
  shapes = (jax.ShapeDtypeStruct(x.shape, jnp.float32), row, row)  # y, mean, 1 / std
  return jax.ffi.ffi_call('PeLayerNormForward', shapes, vmap_method='broadcast_all')(
      x, scale, bias, epsilon=np.float32(epsilon))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def fused_layer_norm(x_NxD, scale_D, bias_D, epsilon: float):
  """The C++ kernel (float32, CPU only: check `cpu_kernels.available()`). Leading axes of
  x are rows; scale and bias are [D], or [..., D] with leading axes that x has too (vmap)."""
  return _forward_call(x_NxD, scale_D, bias_D, epsilon)[0]


def _fused_forward(x, scale, bias, epsilon):
  y, mean, inverse_std = _forward_call(x, scale, bias, epsilon)
  return y, (x, scale, mean, inverse_std)


def _fused_backward(epsilon, residuals, dy):
  del epsilon  # In the saved inverse standard deviation.
  x, scale, mean, inverse_std = residuals
  shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (x, scale, scale))
  return tuple(jax.ffi.ffi_call('PeLayerNormBackward', shapes, vmap_method='broadcast_all')(
      x, scale, mean, inverse_std, dy))


fused_layer_norm.defvjp(_fused_forward, _fused_backward)


def layer_norm(x_NxD: jax.Array, scale_D: jax.Array, bias_D: jax.Array, epsilon: float = 1e-6) -> jax.Array:
  """LayerNorm of x over its last axis (the module docstring's formula): the kernel on a
  CPU for float32 where it is built, the formula in XLA elsewhere."""
  fused = lambda x, scale, bias: fused_layer_norm(x, scale, bias, epsilon)  # noqa: E731
  return cpu_kernels.fused_where_possible(fused, functools.partial(in_xla, epsilon=epsilon), x_NxD, scale_D, bias_D)
