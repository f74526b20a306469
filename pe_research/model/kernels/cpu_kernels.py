"""The package's C++ kernels for XLA:CPU (XLA FFI handlers), built on first use.

    cpu_attention.cc    fused softmax attention, forward and backward (cpu_attention.py)
    cpu_layer_norm.cc   LayerNorm, forward and backward (layer_norm.py)
    cpu_transpose.cc    transposes, for weight gradients (matmul.py)
    cpu_vectors.h       their vector types, sized to the CPU

(all in this directory, `pe_research/model/kernels/`).

The sources are compiled into one library, once per machine, by the system's C++ compiler
(`CXX`, else `c++`) against the installed jaxlib's FFI headers, and cached in
`PE_RESEARCH_CACHE_DIR` (default `~/.cache/pe_research`); each handler is registered with
XLA:CPU under its exported symbol's name (`ffi_call('PeAttentionForward', ...)`). Without
a compiler, or with `PE_RESEARCH_CPU_KERNELS=0`, `available()` is False and their callers
compute the same in XLA.
"""

import ctypes
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

_SOURCES = tuple(sorted(pathlib.Path(__file__).parent.glob('cpu_*.cc')))  # Listed in the docstring.
_HEADER = pathlib.Path(__file__).with_name('cpu_vectors.h')  # Included by each.
# The FFI handlers the sources export; each is registered under its own name.
HANDLERS = ('PeAttentionForward', 'PeAttentionBackward', 'PeLayerNormForward', 'PeLayerNormBackward',
            'PeTransposeToBfloat16', 'PeTransposeFloat32')
# The kernels set their vector width themselves (from the -march=native macros), so no
# x86-only width flag: the same flags build on ARM.
_FLAGS = ('-std=c++17', '-O3', '-march=native', '-fPIC', '-shared')


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
  sources = [source.read_text() for source in (*_SOURCES, _HEADER)]
  key = hashlib.sha256(
      '\0'.join([*sources, compiler, *_FLAGS, jaxlib.__version__, _machine_id()]).encode()
  ).hexdigest()[:16]
  cache = pathlib.Path(os.environ.get('PE_RESEARCH_CACHE_DIR', pathlib.Path.home() / '.cache' / 'pe_research'))
  library = cache / f'cpu_kernels-{key}.so'
  if not library.exists():
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
      built = pathlib.Path(scratch) / library.name
      subprocess.run([compiler, *_FLAGS, f'-I{jax.ffi.include_dir()}', *map(str, _SOURCES), '-o', str(built)],
                     check=True, capture_output=True, text=True)
      os.replace(built, library)
  return library


@functools.cache
def available() -> bool:
  """Whether the kernels are built and registered with XLA:CPU (see the module docstring)."""
  if os.environ.get('PE_RESEARCH_CPU_KERNELS', '1') == '0':
    return False
  try:
    library = ctypes.CDLL(str(_build()))
    for handler in HANDLERS:
      jax.ffi.register_ffi_target(handler, jax.ffi.pycapsule(getattr(library, handler)), platform='cpu')
  except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
    detail = getattr(error, 'stderr', '') or error
    warnings.warn(f'CPU kernels unavailable, their operations run in XLA: {detail}', stacklevel=2)
    return False
  return True


def fused_where_possible(fused, in_xla, *operands):
  """fused(*operands) (a kernel's call) on a CPU, where the kernels are built and every
  floating operand is float32; in_xla(*operands), the same computation in XLA, elsewhere.
  Which of the two runs is chosen when lowering for a platform (jax.lax.platform_dependent),
  or already while tracing where JAX has no platform but the CPU (its default backend is a
  CPU only then), which spares autodiff tracing both (half the trace of a :paper training
  step). Exporting from there for another platform (jax.export) needs
  PE_RESEARCH_CPU_KERNELS=0."""
  if any(jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.float32 for x in operands) or not available():
    return in_xla(*operands)
  if jax.default_backend() == 'cpu':
    return fused(*operands)
  return jax.lax.platform_dependent(*operands, cpu=fused, default=in_xla)
