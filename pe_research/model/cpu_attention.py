"""Fused softmax attention for CPUs: an XLA FFI kernel (`cpu_attention.cc`), built on first use.

    out = softmax(q k^T + mask bias) v,   q already scaled; heads-major [B, H, T, K]

XLA:CPU computes attention with heads 8 wide as a [T, S] logits product with an 8-long
contraction and passes over the logits. The C++ kernel takes one query row per vector lane
(16 rows at a time with AVX-512, 8 with AVX2, 4 elsewhere), with their logits in cache
(FlashAttention's idea, Dao et al. 2022, arXiv 2205.14135), and recomputes them in the
backward from the saved row maxima and sums (dq over blocks of rows, dk and dv over blocks
of keys, so that no sum crosses the lanes). On the 2-core CPU, 8 heads of width 8, its
forward is 5.5x faster than XLA's at T=640 and a training step's attention 1.7x faster at
the lengths of `:paper` (T <= 80); scripts/benchmark.py has the effect on the models.
Values equal the XLA path (`attention_kernels`) to float rounding, masked keys included
(the same single -1e9 is added), and are independent of the thread count.

The library is compiled once per machine by the system's C++ compiler (`CXX`, else `c++`)
against the installed jaxlib's FFI headers and cached in `PE_RESEARCH_CACHE_DIR` (default
`~/.cache/pe_research`). Without a compiler, on another platform, for other dtypes, or with
`PE_RESEARCH_CPU_ATTENTION=0`, attention runs in XLA: `available()` says which.
"""

import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
import jaxlib

_SOURCE = pathlib.Path(__file__).with_name('cpu_attention.cc')
# The kernel sets its vector width itself (from the -march=native macros), so no x86-only
# width flag: the same flags build on ARM.
_FLAGS = ('-std=c++17', '-O3', '-march=native', '-fPIC', '-shared')
_FORWARD, _BACKWARD = 'pe_research_attention_forward', 'pe_research_attention_backward'


def _machine_id() -> str:
  """What -march=native depends on: the CPU's model and feature flags."""
  try:
    lines = pathlib.Path('/proc/cpuinfo').read_text().splitlines()
    return ''.join(sorted({line for line in lines if line.startswith(('model name', 'flags'))}))
  except OSError:
    return platform.processor() + platform.machine()


def _build() -> pathlib.Path:
  """The compiled library, from the cache or compiled now (written atomically)."""
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++') or shutil.which('clang++')
  if compiler is None:
    raise RuntimeError('no C++ compiler found (set CXX)')
  key = hashlib.sha256(
      '\0'.join([_SOURCE.read_text(), compiler, *_FLAGS, jaxlib.__version__, _machine_id()]).encode()
  ).hexdigest()[:16]
  cache = pathlib.Path(os.environ.get('PE_RESEARCH_CACHE_DIR', pathlib.Path.home() / '.cache' / 'pe_research'))
  library = cache / f'cpu_attention-{key}.so'
  if not library.exists():
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
      built = pathlib.Path(scratch) / library.name
      subprocess.run([compiler, *_FLAGS, f'-I{jax.ffi.include_dir()}', str(_SOURCE), '-o', str(built)],
                     check=True, capture_output=True, text=True)
      os.replace(built, library)
  return library


@functools.cache
def available() -> bool:
  """Whether the kernel is built and registered with XLA:CPU (see the module docstring)."""
  if os.environ.get('PE_RESEARCH_CPU_ATTENTION', '1') == '0':
    return False
  try:
    import ctypes  # noqa: PLC0415

    library = ctypes.CDLL(str(_build()))
    jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(library.PeAttentionForward), platform='cpu')
    jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(library.PeAttentionBackward), platform='cpu')
  except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
    detail = getattr(error, 'stderr', '') or error
    warnings.warn(f'CPU attention kernel unavailable, attention runs in XLA: {detail}', stacklevel=2)
    return False
  return True


def _forward_call(q, k, v, key_bias, rows, causal):
  row = jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32)
  shapes = (jax.ShapeDtypeStruct(q.shape, jnp.float32), row, row)  # out, row max m, row sum l
  return jax.ffi.ffi_call(_FORWARD, shapes, vmap_method='broadcast_all')(q, k, v, key_bias, rows, causal=causal)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def fused_attention(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, key_bias_BxS, rows_BxT, causal: bool):
  """[B, H, T, K] softmax attention (float32, CPU only: check `available()`).

  key_bias: [B, S], 0 where a key is visible and `attention_kernels.MASKED_LOGIT` where
  not; rows: int32 [B, T], each query's row (key j is hidden from it if causal and j >
  row). Leading axes beyond B (vmap) are batch axes too."""
  return _forward_call(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, key_bias_BxS, rows_BxT, causal)[0]


def _fused_forward(q, k, v, key_bias, rows, causal):
  out, row_max, row_sum = _forward_call(q, k, v, key_bias, rows, causal)
  return out, (q, k, v, key_bias, rows, out, row_max, row_sum)


def _fused_backward(causal, residuals, dout):
  q, k, v, key_bias, rows, out, row_max, row_sum = residuals
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
  dq, dk, dv = jax.ffi.ffi_call(_BACKWARD, shapes, vmap_method='broadcast_all')(
      q, k, v, key_bias, rows, out, row_max, row_sum, dout, causal=causal)
  return dq, dk, dv, None, None


fused_attention.defvjp(_fused_forward, _fused_backward)
