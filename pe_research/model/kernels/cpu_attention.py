"""Fused softmax attention for CPUs: an XLA FFI kernel (`cpu_attention.cc`), built on first use.

    out = softmax(q k^T + a + mask bias) v,   q already scaled; heads-major [B, H, T, K]

with a = 0, or a distance bias (ALiBi's, `encodings.base.DistanceBias`) computed in the
kernel from one slope per head and the positions (no [T, S] bias tensor):
a_h[t, j] = -slope_h (i_t - j_j), or -slope_h |i_t - j_j| when symmetric.

XLA:CPU computes attention with heads 8 wide as a [T, S] logits product with an 8-long
contraction and passes over the logits. The C++ kernel takes one query row per vector lane
(16 rows at a time with AVX-512, 8 with AVX2, 4 elsewhere), with their logits in cache
(FlashAttention's idea, Dao et al. 2022, arXiv 2205.14135), and recomputes them in the
backward from the saved row maxima and sums (dq over blocks of rows, dk and dv over blocks
of keys, so that no sum crosses the lanes); docs/performance.md has what it buys.
Values equal the XLA path (`attention`) to float rounding, masked keys included (the same
single -1e9 is added), and are independent of the thread count.

The kernel is built with the package's other C++ kernels (`cpu_kernels`): without a
compiler, on another platform, for other dtypes, or with `PE_RESEARCH_CPU_KERNELS=0`,
attention runs in XLA: `cpu_kernels.available()` says which.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _attributes(num_heads: int, causal: bool, slopes: tuple[float, ...] | None, symmetric: bool) -> dict:
  """The kernel's attributes: causal, and the distance bias's kind (0 none, 1 linear, 2
  symmetric) with one slope per head."""
  if slopes is None:
    return dict(causal=causal, bias=np.int32(0), slopes=np.zeros(num_heads, np.float32))
  if len(slopes) != num_heads:
    raise ValueError(f'{len(slopes)} slopes for {num_heads} heads')
  return dict(causal=causal, bias=np.int32(2 if symmetric else 1), slopes=np.asarray(slopes, np.float32))


def _forward_call(q, k, v, key_bias, rows, q_positions, k_positions, causal, slopes, symmetric):
  row = jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32)
  shapes = (jax.ShapeDtypeStruct(q.shape, jnp.float32), row, row)  # out, row max m, row sum l
  return jax.ffi.ffi_call('PeAttentionForward', shapes, vmap_method='broadcast_all')(
      q, k, v, key_bias, rows, q_positions, k_positions, **_attributes(q.shape[-3], causal, slopes, symmetric))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def fused_attention(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, key_bias_BxS, rows_BxT, q_positions_BxT, k_positions_BxS,
                    causal: bool, slopes: tuple[float, ...] | None = None, symmetric: bool = False):
  """[B, H, T, K] softmax attention (float32, CPU only: check `cpu_kernels.available()`).

  key_bias: [B, S], 0 where a key is visible and `attention.MASKED_LOGIT` where not; rows:
  int32 [B, T], each query's row (key j is hidden from it if causal and j > row);
  positions: float32, [B, T] and [B, S], read only for a distance bias, which `slopes` (one
  per head; None: no bias) and `symmetric` describe (module docstring). Leading axes beyond
  B (vmap) are batch axes too."""
  return _forward_call(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, key_bias_BxS, rows_BxT, q_positions_BxT, k_positions_BxS,
                       causal, slopes, symmetric)[0]


def _fused_forward(q, k, v, key_bias, rows, q_positions, k_positions, causal, slopes, symmetric):
  out, row_max, row_sum = _forward_call(q, k, v, key_bias, rows, q_positions, k_positions, causal, slopes, symmetric)
  return out, (q, k, v, key_bias, rows, q_positions, k_positions, out, row_max, row_sum)


def _fused_backward(causal, slopes, symmetric, residuals, dout):
  q, k, v, key_bias, rows, q_positions, k_positions, out, row_max, row_sum = residuals
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
  dq, dk, dv = jax.ffi.ffi_call('PeAttentionBackward', shapes, vmap_method='broadcast_all')(
      q, k, v, key_bias, rows, q_positions, k_positions, out, row_max, row_sum, dout,
      **_attributes(q.shape[-3], causal, slopes, symmetric))
  return dq, dk, dv, None, None, None, None


fused_attention.defvjp(_fused_forward, _fused_backward)
