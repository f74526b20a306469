"""scripts/benchmark.py --quick runs and prints its table (JAX only: no PyTorch columns)."""

import json
import os
import subprocess
import sys

import jax

from tests.conftest import ROOT


def test_quick_benchmark_prints_every_row(tmp_path):
  out = tmp_path / 'benchmark.json'
  result = subprocess.run(
      [sys.executable, 'scripts/benchmark.py', '--quick', '--torch=false', '--models=default',
       f'--json_out={out}', f'--markdown_out={tmp_path / "table.md"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')]))},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  table = [line for line in result.stdout.splitlines() if line.startswith('|')]
  assert table[0] == '| metric | default |'
  labels = [line.split(' | ')[0].removeprefix('| ') for line in table[2:]]
  on_cpu = jax.default_backend() == 'cpu'
  assert labels == [
      f'matmul peak GFLOP/s (f32 {2048 if on_cpu else 8192}^2)', 'train steps/s (1 seed)', 'train tokens/s',
      'train GFLOP/step, XLA count', 'train GFLOP/step, analytic (matmuls)', 'train GFLOP/s achieved (XLA count)',
      'train share of matmul peak',
      'train compile s', 'train compilations', '2 seeds vmapped: model-steps/s', '2 seeds vmapped / 1 seed throughput',
      '2 seeds in a loop (vmap_seeds=1) / 1 seed throughput',
      'eval 41..44 x 4: total s', 'eval compile s', 'eval compilations', 'forward tokens/s, T=64 x 2',
      'forward tokens/s, T=256 x 2', 'forward XLA memory MB, T=64', 'forward XLA memory MB, T=256',
      'process peak RSS MB', *([] if on_cpu else ['device peak memory MB']),
  ]
  assert 'default: no PyTorch column (PyTorch not used)' in result.stdout
  numbers = json.loads(out.read_text())['models']['default']
  assert numbers['torch'] is None
  assert numbers['jax']['train_compilations'] == 1 and numbers['jax']['eval_compilations'] == 1
  assert numbers['jax']['train_steps_per_s'] > 0
  assert numbers['jax']['seeds_loop_throughput_ratio'] > 0
  # Stamped with where and how it was measured, for docs/performance.md.
  machine = json.loads(out.read_text())['machine']
  assert machine['versions']['jax'] == jax.__version__ and machine['command'].startswith('python scripts/benchmark.py --quick')
  stamped = (tmp_path / 'table.md').read_text()
  assert stamped.startswith(f"Measured {machine['date']} on {machine['cpu']}") and '| metric | default |' in stamped
