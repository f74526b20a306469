"""Checkpoints and resume: a run killed (SIGKILL) at any point and run again ends
bit-identical to one that never stopped; a non-finite loss stops a run cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research import checkpointing, experiment, io
from pe_research.training import train_step
from pe_research.validation import validate
from tests.conftest import ROOT, default, tiny_config

# A tiny run of `python -m pe_research.main`: 2 seeds, 4 compiled calls of 5 steps, a
# checkpoint after each, evaluation in 4 length buckets.
OVERRIDES = {
    'num_seeds': 2, 'model.num_layers': 1, 'model.model_dim': 16, 'model.num_heads': 2, 'model.mlp_ratio': 2,
    'train.steps': 20, 'train.steps_per_call': 5, 'train.checkpoint_every': 5, 'train.batch_size': 8,
    'train.max_length': 4, 'train.warmup_steps': 5, 'eval.max_length': 8, 'eval.batch_size': 8,
}
ARGS = [f'--config={os.path.join(ROOT, "configs", "default.py")}', *(f'--config.{k}={v}' for k, v in OVERRIDES.items())]

# Runs pe_research.main after arranging to SIGKILL itself at the N-th occurrence of a point:
#   device_get  a compiled call's results are fetched: training chunks 1-4, then eval buckets;
#   append      a train.jsonl append, after writing half a line;
#   commit      a checkpoint's final rename, its files written.
DRIVER = '''
import json, os, signal, sys
import jax
import orbax.checkpoint as ocp
from pe_research import cli, io, main

point, n = sys.argv[1].split(':')
seen = 0

def kill_at_nth(original, counts=lambda *args: True, before=lambda *args: None):
  def wrapped(*args, **kwargs):
    global seen
    seen += counts(*args)
    if seen == int(n):
      before(*args)
      os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
  return wrapped

def tear(path, records):
  with open(path, 'a') as f:
    f.write(json.dumps(records[0])[:20])

if point == 'device_get':
  jax.device_get = kill_at_nth(jax.device_get)
elif point == 'append':
  io.append_jsonl = kill_at_nth(io.append_jsonl, before=tear)
elif point == 'commit':
  ocp.path.atomicity.AtomicRenameTemporaryPath.finalize = kill_at_nth(
      ocp.path.atomicity.AtomicRenameTemporaryPath.finalize, counts=lambda path: path.get_final().name.isdigit())
cli.run(main.main, main.define_flags, ['main', *sys.argv[2:]])
'''


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """The subprocesses' environment: they share a JAX compilation cache, so only the first
  compiles (the same executables, so no less bit-identical; 4 s a run instead of 15)."""
  return {**os.environ, 'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('jax_cache')),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0', 'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}


def run_main(workdir, env, kill_at=None):
  """Runs the tiny config in a subprocess, killing it at `kill_at`; returns its exit code."""
  command = [sys.executable, '-c', DRIVER, kill_at] if kill_at else [sys.executable, '-m', 'pe_research.main']
  return subprocess.run([*command, *ARGS, f'--workdir={workdir}'], cwd=ROOT, env=env, capture_output=True).returncode


def train_records(workdir):
  return [(r['seed'], r['step'], r['loss'], r['token_accuracy'], r['sequence_accuracy'])
          for r in io.read_jsonl(os.path.join(workdir, 'train.jsonl'))]


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env):
  """The run without interruption."""
  workdir = tmp_path_factory.mktemp('reference')
  assert run_main(workdir, env) == 0
  return workdir


def assert_same_results(workdir, reference):
  assert open(workdir / 'eval.jsonl', 'rb').read() == open(reference / 'eval.jsonl', 'rb').read()
  # Every step logged once, with the same numbers.
  assert train_records(workdir) == train_records(reference)
  assert [s for _, s, *_ in train_records(workdir)] == [5, 5, 10, 10, 15, 15, 20, 20]
  with checkpointing.Checkpoints(workdir) as ours, checkpointing.Checkpoints(reference) as theirs:
    (step, tree), (ref_step, ref_tree) = ours.read_latest(), theirs.read_latest()
  assert step == ref_step == 20
  assert jax.tree.structure(tree) == jax.tree.structure(ref_tree)
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(ref_tree)):
    np.testing.assert_array_equal(a, b)
  summary, ref_summary = (json.load(open(d / 'summary.json')) for d in (workdir, reference))
  for key in ('in_distribution_accuracy', 'unseen_lengths_accuracy'):
    assert summary[key] == ref_summary[key]


def test_run_killed_at_several_points_resumes_bit_identically(tmp_path, reference, env):
  checkpoints = tmp_path / checkpointing.DIRECTORY
  assert run_main(tmp_path, env, 'device_get:3') == -signal.SIGKILL  # In the 3rd compiled call.
  assert sorted(os.listdir(checkpoints), key=int) == ['5', '10']  # The last two are kept.
  assert run_main(tmp_path, env, 'commit:2') == -signal.SIGKILL  # Saving step 20, after 15.
  assert '15' in os.listdir(checkpoints) and any('tmp' in name for name in os.listdir(checkpoints))
  assert run_main(tmp_path, env, 'append:1') == -signal.SIGKILL  # Logging step 20.
  assert not open(tmp_path / 'train.jsonl').read().endswith('\n')
  assert run_main(tmp_path, env, 'device_get:2') == -signal.SIGKILL  # Evaluating, after training.
  assert sorted(os.listdir(checkpoints), key=int) == ['15', '20'] and not (tmp_path / 'summary.json').exists()
  assert run_main(tmp_path, env) == 0
  assert_same_results(tmp_path, reference)


def test_main_killed_from_outside_resumes_bit_identically(tmp_path, reference, env):
  process = subprocess.Popen([sys.executable, '-m', 'pe_research.main', *ARGS, f'--workdir={tmp_path}'], cwd=ROOT,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  while not io.read_jsonl(tmp_path / 'train.jsonl') and process.poll() is None:
    time.sleep(0.002)
  process.send_signal(signal.SIGKILL)  # While training or evaluating.
  assert process.wait() == -signal.SIGKILL
  assert run_main(tmp_path, env) == 0
  assert_same_results(tmp_path, reference)


def test_finished_run_is_not_run_again_and_another_config_is_refused(tmp_path, reference):
  config = default.get_config()
  config.update_from_flattened_dict(OVERRIDES)
  summary = json.load(open(reference / 'summary.json'))
  assert experiment.run(config, str(reference)) == summary
  # Checkpointing more often changes no result: still the same finished run.
  config.train.checkpoint_every = 10
  assert experiment.run(config, str(reference)) == summary
  config.train.learning_rate = 0.5
  with pytest.raises(experiment.RunFailed, match='holds a run of another config .differing in train.learning_rate'):
    experiment.run(config, str(reference))


def poisoned_train_step(bad_step, make_train_step=train_step.make_train_step):
  """make_train_step whose loss is NaN from step `bad_step` on."""

  def make(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)

    def poisoned(state, data_key):
      state, metrics = step_fn(state, data_key)
      return state, {**metrics, 'loss': jnp.where(state.step >= bad_step, jnp.nan, metrics['loss'])}

    return poisoned

  return make


def test_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setattr(train_step, 'make_train_step', poisoned_train_step(bad_step=8))
  config = tiny_config(num_seeds=2, model__model_dim=16, model__num_heads=2, eval__max_length=4)
  config.train.update(steps=20, steps_per_call=5, checkpoint_every=5, max_length=4)
  message = r'non-finite loss or parameters at step 8 \(seed 0, 1\); training stopped, last good checkpoint: step 5'
  with pytest.raises(experiment.RunFailed, match=message):
    experiment.run(config, str(tmp_path))
  assert json.load(open(tmp_path / experiment.FAILED))['error'].startswith('RunFailed: non-finite loss or parameters at step 8')
  with checkpointing.Checkpoints(tmp_path) as checkpoints:
    assert checkpoints.latest_step() == 5
  assert not (tmp_path / 'summary.json').exists() and not (tmp_path / 'eval.jsonl').exists()


@pytest.mark.parametrize('step, expected', [(5, False), (10, True), (15, False), (20, True), (25, False), (30, True)])
def test_checkpoints_at_each_multiple_reached_and_at_the_end(step, expected):
  config = tiny_config()
  config.train.update(steps=30, steps_per_call=5, checkpoint_every=10)
  assert experiment._checkpoint_due(step, config.train) == expected
  config.train.update(steps_per_call=15, checkpoint_every=10)  # 15 passes 10, 30 reaches 20 and 30.
  assert experiment._checkpoint_due(15, config.train) and experiment._checkpoint_due(30, config.train)


def test_negative_checkpoint_interval_is_a_config_error():
  with pytest.raises(ValueError, match=r'config.train.checkpoint_every=-1 must be >= 0'):
    validate(tiny_config(train__checkpoint_every=-1))
