"""With several devices the seed axis is sharded over them, and results do not change."""

import json
import os
import subprocess
import sys

import numpy as np

from pe_research import experiment, io
from tests.conftest import ROOT, tiny_config

SCRIPT = """
import json, sys
import jax
from pe_research import experiment
from pe_research.training import sharding
from tests.conftest import tiny_config
assert jax.device_count() == 2, jax.devices()
config = tiny_config(num_seeds=4)
placed = sharding.shard_seeds(jax.numpy.zeros((4, 3)), sharding.seed_sharding(4))
experiment.run(config, sys.argv[1])
print(json.dumps({'devices': len(placed.sharding.device_set)}))
"""


def test_seeds_spread_over_two_devices_give_the_same_results(tmp_path):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2', 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path / 'two')], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {'devices': 2}
  experiment.run(tiny_config(num_seeds=4), str(tmp_path / 'one'))
  two, one = (io.read_jsonl(tmp_path / name / 'eval.jsonl') for name in ('two', 'one'))
  assert [(r['seed'], r['length']) for r in two] == [(r['seed'], r['length']) for r in one]
  np.testing.assert_allclose([r['token_accuracy'] for r in two], [r['token_accuracy'] for r in one], atol=0.02)
