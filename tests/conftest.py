"""Shared test fixtures: a shrunken default config that trains in seconds."""

import importlib.util
import os
import shutil
import sys

import pytest

# The tests compare with formulas at float32 tolerances and resume runs bit for bit, on any
# platform: full float32 matmuls (GPUs default to TF32, TPUs to bfloat16 passes) and
# deterministic GPU kernels. Set before JAX starts; the tests' subprocesses inherit them.
os.environ.setdefault('JAX_DEFAULT_MATMUL_PRECISION', 'float32')
# --xla_backend_optimization_level=0: compiling, not running, is most of the time a tiny
# test model takes on a CPU, and the unoptimised backend compiles it faster (the suite about
# 20% sooner); tests that compare exactly compare runs made under the same flags.
os.environ['XLA_FLAGS'] = (f"{os.environ.get('XLA_FLAGS', '')} --xla_gpu_deterministic_ops=true "
                           '--xla_backend_optimization_level=0').strip()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'configs'))

import default  # noqa: E402  (configs/default.py)


def load_script(name: str):
  """scripts/<name>.py as a module (the scripts are not part of the package)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'scripts', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny_config(**overrides):
  """The default config, shrunk: 1 layer, width 32, 50 steps, training lengths 1..6 in one
  part, evaluation of lengths 1..8 in one bucket (each part and each bucket is one more copy
  of the model to compile; tests of several set them).

  `overrides` are dotted field names with '__' for '.', e.g. encoding__name='rope'."""
  config = default.get_config()
  config.model.update(num_layers=1, model_dim=32, num_heads=4)
  config.train.update(steps=50, steps_per_call=25, batch_size=16, max_length=6, warmup_steps=10, length_parts=1)
  config.eval.update(max_length=8, batch_size=8)
  for key, value in overrides.items():
    *path, leaf = key.split('__')
    section = config
    for part in path:
      section = section[part]
    section[leaf] = value
  return config


@pytest.fixture
def config():
  return tiny_config()


def require_cpu_kernels():
  """Skips the test off a CPU or without a C++ compiler; fails it if the package's C++
  kernels did not build where they should."""
  import jax

  from pe_research.model import kernels

  if jax.default_backend() != 'cpu':
    pytest.skip('a CPU kernel')
  if shutil.which(os.environ.get('CXX', 'c++')) is None:
    pytest.skip('no C++ compiler')
  assert kernels.available(), 'a C++ compiler is installed, yet the kernels did not build'
