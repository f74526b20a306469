"""A run over two processes, as on two hosts: `python -m pe_research.main --distributed`
twice on this machine (`jax.distributed` over localhost, CPU collectives by Gloo, one device
per process), with train.shard='seeds' and 'batch'. Both processes are killed (SIGKILL)
after the first checkpoint, run again, and end with the results of one process.

Tolerance: not equality. The two-process programs are compiled for another layout than the
one-device program (one seed, or half a batch, per device; 'batch' also sums the gradients
of the two halves in an all-reduce), so float32 sums are grouped differently and round
differently: 1.2e-7 apart in the parameters after 20 steps, 1.8e-7 relative in the losses
(measured). RTOL and ATOL allow about 10x that. Accuracies are means of right and wrong
answers, so one answer flipped by that rounding would move one by about 0.01 and fail: the
test asks that no answer flips, only that the means round alike. The programs are
deterministic, so the test does not flake: it passes or fails on a machine every time.

Only process 0 writes the run's files. Orbax saves a checkpoint collectively: every process
writes the parts of the arrays it holds (here process 1 its seed's parameters, or its share
of the replicated ones), under checkpoints/<step>/default/{ocdbt.process_1,
array_metadatas/process_1}. Process 1 runs with umask 077, so its files are the ones that no
group can read, and the test asserts it wrote nothing else.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pe_research import checkpointing, io
from tests.conftest import ROOT

# A tiny run (as in test_resume): 2 seeds, 4 compiled calls of 5 steps, a checkpoint after each.
OVERRIDES = {
  'num_seeds': 2, 'model.num_layers': 1, 'model.model_dim': 16, 'model.num_heads': 2, 'model.mlp_ratio': 2,
  'train.steps': 20, 'train.steps_per_call': 5, 'train.checkpoint_every': 5, 'train.batch_size': 8,
  'train.max_length': 4, 'train.warmup_steps': 5, 'eval.max_length': 8, 'eval.batch_size': 8,
}
ARGS = [f'--config={os.path.join(ROOT, "configs", "default.py")}', *(f'--config.{k}={v}' for k, v in OVERRIDES.items())]
RTOL, ATOL = 1e-5, 1e-6  # See the module docstring.
# What Orbax has process 1 write: its parts of a checkpoint.
PROCESS_1_FILES = re.compile(r'checkpoints/\d+/default/(ocdbt\.process_1(/.*)?|array_metadatas/process_1)')
TIMEOUT_S = 300


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """Every process runs on the CPU (one device), with Gloo for the collectives between
  processes, and shares a compilation cache (JAX reads it on every process but writes it
  only from process 0, so process 1 compiles every time)."""
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo',
      'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('jax_cache')),
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0', 'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env):
  """The run in one process, on one device. It serves both shards: on one device
  train.shard moves nothing, so the compiled programs are the same."""
  workdir = tmp_path_factory.mktemp('one_process')
  result = subprocess.run([sys.executable, '-m', 'pe_research.main', *ARGS, f'--workdir={workdir}'], cwd=ROOT,
              env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_pair(workdir, shard: str, env: dict, logs) -> list[subprocess.Popen]:
  """Processes 0 and 1 of a two-process run, on a fresh coordinator port; process 1 with
  umask 077 (see the module docstring)."""
  address = f'127.0.0.1:{free_port()}'
  command = [sys.executable, '-m', 'pe_research.main', '--distributed', *ARGS, f'--config.train.shard={shard}',
               f'--workdir={workdir}']
  return [
    subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, umask=umask,
                         env={**env, 'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': '2',
                              'JAX_PROCESS_ID': str(i)})
    for i, (umask, log) in enumerate(zip((0o022, 0o077), logs))
  ]


def log_tails(logs) -> str:
  tails = []
  for i, log in enumerate(logs):
    log.seek(0)
    tails.append(f'--- process {i}:\n' + log.read().decode(errors='replace')[-2000:])
  return '\n'.join(tails)


def kill_after_first_checkpoint(processes, checkpoint, logs) -> None:
  deadline = time.monotonic() + TIMEOUT_S
  while not checkpoint.is_dir():  # Orbax renames a checkpoint into place once it is complete.
    assert all(p.poll() is None for p in processes), log_tails(logs)
    assert time.monotonic() < deadline, log_tails(logs)
    time.sleep(0.01)
  for p in processes:
    p.send_signal(signal.SIGKILL)
  assert [p.wait() for p in processes] == [-signal.SIGKILL] * 2, log_tails(logs)


def finish(processes, logs) -> None:
  try:
    codes = [p.wait(timeout=TIMEOUT_S) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  assert codes == [0, 0], log_tails(logs)


def assert_close(actual, desired, what):
  np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=ATOL, err_msg=what)


@pytest.mark.parametrize('shard, spec', [('seeds', ('seeds',)), ('batch', ())])
def test_two_processes_killed_and_resumed_end_with_the_results_of_one(tmp_path, env, reference, shard, spec):
  workdir = tmp_path / 'run'
  logs = [open(tmp_path / f'process_{i}.log', 'w+b') for i in range(2)]
  kill_after_first_checkpoint(start_pair(workdir, shard, env, logs), workdir / checkpointing.DIRECTORY / '5', logs)
  assert not (workdir / 'summary.json').exists()
  finish(start_pair(workdir, shard, env, logs), logs)  # Resumes from step 5 (or 10, if saved before the kill).

  # The state lived on both processes' devices: split by seed, or replicated.
  manager = ocp.CheckpointManager(workdir / checkpointing.DIRECTORY, item_handlers=ocp.StandardCheckpointHandler())
  shardings = [leaf.sharding for leaf in jax.tree.leaves(manager.item_metadata(20))]
  manager.close()
  assert {(tuple(s.partition_spec), len(s.device_mesh.mesh)) for s in shardings} == {(spec, 2)}

  ours, theirs = (io.read_jsonl(d / 'train.jsonl') for d in (workdir, reference))
  assert [(r['seed'], r['step']) for r in ours] == [(r['seed'], r['step']) for r in theirs] == [
    (seed, step) for step in (5, 10, 15, 20) for seed in (0, 1)]
  for key in ('loss', 'token_accuracy', 'sequence_accuracy'):
    assert_close([r[key] for r in ours], [r[key] for r in theirs], f'train.jsonl {key}')
  ours, theirs = (io.read_jsonl(d / 'eval.jsonl') for d in (workdir, reference))
  assert [(r['seed'], r['length']) for r in ours] == [(r['seed'], r['length']) for r in theirs]
  for key in ('token_accuracy', 'sequence_accuracy', 'position_blind_ceiling'):
    assert_close([r[key] for r in ours], [r[key] for r in theirs], f'eval.jsonl {key}')
  ours, theirs = (io.read_json(d / 'summary.json') for d in (workdir, reference))
  assert ours['step'] == theirs['step'] == 20
  for key in ('in_distribution_accuracy', 'unseen_lengths_accuracy'):
    assert_close(ours[key], theirs[key], f'summary.json {key}')
  with checkpointing.Checkpoints(workdir) as a, checkpointing.Checkpoints(reference) as b:
    (step, tree), (ref_step, ref_tree) = a.read_latest(), b.read_latest()
  assert step == ref_step == 20 and jax.tree.structure(tree) == jax.tree.structure(ref_tree)
  for (path, leaf), ref_leaf in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(ref_tree)):
    assert_close(leaf, ref_leaf, jax.tree_util.keystr(path))

  # Only process 0 wrote, but for process 1's parts of the checkpoints.
  by_process_1 = []
  for directory, names, files in os.walk(workdir):
    for name in names + files:
      path = os.path.join(directory, name)
      if not os.stat(path).st_mode & 0o040:  # Not group-readable: made under umask 077.
        by_process_1.append(os.path.relpath(path, workdir))
  assert by_process_1, 'process 1 holds parts of the state, so it writes parts of the checkpoints'
  assert [p for p in by_process_1 if not PROCESS_1_FILES.fullmatch(p)] == []
