"""With several devices the seeds, or each batch, are split over them, and results do not
change."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pe_research import experiment, io
from tests.conftest import ROOT, tiny_config

SCRIPT = """
import json, sys
import jax
from pe_research import experiment
from pe_research.training import sharding
from tests.conftest import tiny_config
assert jax.device_count() == 4, jax.devices()
config = tiny_config(num_seeds=int(sys.argv[2]), train__shard=sys.argv[3])
placed = sharding.place(jax.numpy.zeros((config.num_seeds, 4)), sharding.state_sharding(config))
batch = jax.jit(sharding.batch_constraint(config))(jax.numpy.zeros((8, 3)))
experiment.run(config, sys.argv[1])
print(json.dumps({'state': len(placed.sharding.device_set), 'batch': len(batch.sharding.device_set)}))
"""


@pytest.mark.parametrize('shard, seeds, devices', [('seeds', 2, {'state': 2, 'batch': 1}),
                                                   ('batch', 1, {'state': 4, 'batch': 4})])
def test_sharded_training_gives_the_unsharded_results(tmp_path, shard, seeds, devices):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4', 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path / 'four'), str(seeds), shard], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == devices
  experiment.run(tiny_config(num_seeds=seeds, train__shard=shard), str(tmp_path / 'one'))
  four, one = (io.read_jsonl(tmp_path / name / 'eval.jsonl') for name in ('four', 'one'))
  assert [(r['seed'], r['length']) for r in four] == [(r['seed'], r['length']) for r in one]
  np.testing.assert_allclose([r['token_accuracy'] for r in four], [r['token_accuracy'] for r in one], atol=0.02)
  losses = [[r['loss'] for r in io.read_jsonl(tmp_path / name / 'train.jsonl')] for name in ('four', 'one')]
  np.testing.assert_allclose(*losses, rtol=1e-4)
