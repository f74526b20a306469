"""What a run survives: damaged files, a diverging seed, a second process, a raised step
count, re-evaluation, Ctrl-C; and the permissions of what it writes."""

import contextlib
import glob
import io as io_lib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research import checkpointing, cli, evaluate, experiment, io, locking, report
from pe_research.training import train_step
from tests.conftest import ROOT, tiny_config


def small_config(**overrides):
  config = tiny_config(num_seeds=2, model__model_dim=16, model__num_heads=2, **overrides)
  config.train.update(steps=20, steps_per_call=5, checkpoint_every=5, max_length=4)
  config.eval.update(max_length=8)
  return config


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished run of small_config, to copy and damage."""
  workdir = tmp_path_factory.mktemp('finished')
  experiment.run(small_config(), str(workdir))
  return workdir


def garbage_checkpoint(workdir):
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '20', '**', '*'), recursive=True):
    if os.path.isfile(path):
      open(path, 'wb').write(b'garbage')
  os.remove(os.path.join(workdir, 'eval.jsonl'))  # So that the run needs the checkpoint.


def emptied_checkpoints(workdir):
  for step in os.listdir(os.path.join(workdir, 'checkpoints')):
    shutil.rmtree(os.path.join(workdir, 'checkpoints', step))
    os.mkdir(os.path.join(workdir, 'checkpoints', step))
  os.remove(os.path.join(workdir, 'eval.jsonl'))


def insert_line(path, text, at=2):
  lines = open(path).read().splitlines(True)
  open(path, 'w').writelines(lines[:at] + [text] + lines[at:])


DAMAGE = {
    'garbage checkpoint': garbage_checkpoint,
    'emptied checkpoint directories': emptied_checkpoints,
    'garbage line in train.jsonl': lambda w: insert_line(os.path.join(w, 'train.jsonl'), 'garbage}\n'),
    'garbage summary.json': lambda w: open(os.path.join(w, 'summary.json'), 'w').write('{garbage'),
    'deleted summary.json': lambda w: os.remove(os.path.join(w, 'summary.json')),
    'deleted eval.jsonl': lambda w: os.remove(os.path.join(w, 'eval.jsonl')),
    'torn eval.jsonl': lambda w: open(os.path.join(w, 'eval.jsonl'), 'r+').truncate(
        os.path.getsize(os.path.join(w, 'eval.jsonl')) - 30),
    'garbage line in eval.jsonl': lambda w: insert_line(os.path.join(w, 'eval.jsonl'), '{"seed": \n'),
}


@pytest.mark.parametrize('damage', DAMAGE)
def test_a_damaged_run_is_repaired_to_the_same_results(damage, finished, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(finished, workdir)
  DAMAGE[damage](str(workdir))
  summary = experiment.run(small_config(), str(workdir))
  assert io.read_jsonl(workdir / 'eval.jsonl') == io.read_jsonl(finished / 'eval.jsonl')
  reference = json.load(open(finished / 'summary.json'))
  for key in ('in_distribution_accuracy', 'unseen_lengths_accuracy', 'seeds', 'step'):
    assert summary[key] == reference[key]
  assert json.load(open(workdir / 'summary.json'))['unseen_lengths_accuracy'] == reference['unseen_lengths_accuracy']
  if 'checkpoint' in damage:
    assert os.listdir(workdir / checkpointing.UNREADABLE)  # Set aside, for a look.


def test_a_garbage_config_json_is_one_line_and_the_report_skips_that_run(finished, tmp_path):
  shutil.copytree(finished, tmp_path / 'good')
  shutil.copytree(finished, tmp_path / 'bad')
  (tmp_path / 'bad' / 'config.json').write_text('{garbage')
  with pytest.raises(experiment.RunFailed, match=r'bad/config.json is not valid JSON .*restore it, or delete'):
    experiment.run(small_config(), str(tmp_path / 'bad'))
  shutil.copytree(finished, tmp_path / 'torn')
  (tmp_path / 'torn' / 'eval.jsonl').write_text(open(finished / 'eval.jsonl').read()[:-40])
  printed = report.write(str(tmp_path))
  rows = open(tmp_path / 'results.csv').read().splitlines()
  assert len(rows) == 2 and rows[1].startswith('reverse_string,sinusoidal,2,')  # The healthy run alone.
  assert '- skipped (broken): bad: ' in printed and 'config.json is not valid JSON' in printed
  assert '- skipped (broken): torn: eval.jsonl is missing or incomplete' in printed


def poisoned_train_step(bad_step, data_key_of_seed=None, make_train_step=train_step.make_train_step):
  """make_train_step whose parameters turn NaN (the loss still finite) from `bad_step` on,
  for every seed or only the one with `data_key_of_seed`."""

  def make(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)

    def poisoned(state, data_key):
      state, metrics = step_fn(state, data_key)
      bad = state.step >= bad_step
      if data_key_of_seed is not None:
        bad &= jnp.all(jax.random.key_data(data_key) == data_key_of_seed)
      params = jax.tree.map(lambda x: jnp.where(bad, jnp.nan, x), state.params)
      return state.replace(params=params), metrics

    return poisoned

  return make


def test_non_finite_parameters_are_never_checkpointed(tmp_path, monkeypatch):
  monkeypatch.setattr(train_step, 'make_train_step', poisoned_train_step(bad_step=8))
  config = small_config()
  config.train.update(steps_per_call=1, checkpoint_every=1)
  with pytest.raises(experiment.RunFailed, match=r'non-finite loss or parameters at step 8 .*last good checkpoint: step 7'):
    experiment.run(config, str(tmp_path))
  with checkpointing.Checkpoints(tmp_path) as checkpoints:
    step, tree = checkpoints.read_latest()
  assert step == 7 and all(np.isfinite(x).all() for x in jax.tree.leaves(tree['state']) if x.dtype.kind == 'f')


def test_a_diverged_seed_is_left_out_and_the_others_are_reported(tmp_path, monkeypatch):
  config = small_config()
  seed_1_key = jax.random.key_data(experiment.seed_keys(config)[1][1])
  monkeypatch.setattr(train_step, 'make_train_step', poisoned_train_step(8, seed_1_key))
  summary = experiment.run(config, str(tmp_path))
  assert summary['seeds'] == 1 and list(summary['diverged_seeds']) == ['1']
  assert summary['diverged_seeds']['1'] == 'non-finite loss or parameters in steps 6..10'
  records = io.read_jsonl(tmp_path / 'eval.jsonl')
  assert records[0] == {'seed': 1, 'diverged': 'non-finite loss or parameters in steps 6..10'}
  assert {r['seed'] for r in records[1:]} == {0} and len(records) == 1 + 8
  # The diverged seed keeps its last finite parameters: no checkpoint holds a non-finite one.
  with checkpointing.Checkpoints(tmp_path) as checkpoints:
    _, tree = checkpoints.read_latest()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree['state']) if x.dtype.kind == 'f')
  assert 'diverged                  seed 1: non-finite loss or parameters in steps 6..10' in experiment.format_summary(
      summary)
  printed = report.write(str(tmp_path))
  assert '| reverse_string | sinusoidal | 1 |' in printed and '1 seed diverged' in printed
  # Resumed, the diverged seed is known from train.jsonl; the run is finished as it is.
  assert experiment.run(config, str(tmp_path)) == json.load(open(tmp_path / 'summary.json'))


def test_one_process_per_workdir(tmp_path):
  with locking.hold(str(tmp_path)):
    holder = f'process {os.getpid()} on '
    assert open(tmp_path / locking.LOCK_FILE).read().startswith(holder)
    with pytest.raises(locking.Busy, match=f'{tmp_path} is in use by {holder}.*; wait for it to finish'):
      with locking.hold(str(tmp_path)):
        pass
    with pytest.raises(locking.Busy):
      experiment.run(small_config(), str(tmp_path))
  # Released: taken again at once.
  with locking.hold(str(tmp_path)):
    pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import fcntl, sys, time; f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX); '
       'f.write("process 1 of a test"); f.flush(); print("locked", flush=True); time.sleep(60)',
       str(tmp_path / locking.LOCK_FILE)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == 'locked\n'
  with pytest.raises(locking.Busy, match='in use by process 1 of a test'):
    with locking.hold(str(tmp_path)):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with locking.hold(str(tmp_path)):  # The kernel dropped the dead process's lock.
    pass


def test_raising_train_steps_continues_to_the_same_result_as_training_that_long(finished, tmp_path):
  workdir = tmp_path / 'continued'
  shutil.copytree(finished, workdir)
  longer = small_config()
  longer.train.steps = 30
  summary = experiment.run(longer, str(workdir))
  reference = experiment.run(longer, str(tmp_path / 'from_scratch'))
  for name in ('eval.jsonl', 'train.jsonl'):
    ours, theirs = io.read_jsonl(workdir / name), io.read_jsonl(tmp_path / 'from_scratch' / name)
    strip = lambda records: [{k: v for k, v in r.items() if k not in ('steps_per_s', 'tokens_per_s')}  # noqa: E731
                             for r in records]
    assert strip(ours) == strip(theirs)
  assert summary['step'] == 30 and summary['in_distribution_accuracy'] == reference['in_distribution_accuracy']
  # The 20-step results are kept beside.
  assert open(workdir / 'eval.step20.jsonl').read() == open(finished / 'eval.jsonl').read()
  assert json.load(open(workdir / 'summary.step20.json'))['step'] == 20
  # A cosine schedule depends on train.steps: continuing is refused.
  cosine = small_config(train__schedule='cosine')
  experiment.run(cosine, str(tmp_path / 'cosine'))
  cosine.train.steps = 30
  with pytest.raises(experiment.RunFailed, match="schedule='cosine' the rate decays over train.steps"):
    experiment.run(cosine, str(tmp_path / 'cosine'))


def test_changed_evaluation_fields_point_to_pe_research_evaluate(finished, tmp_path):
  shutil.copytree(finished, tmp_path / 'run')
  config = small_config()
  config.eval.max_length = 12
  with pytest.raises(experiment.RunFailed, match=r'evaluated with other settings \(eval.max_length\); evaluate it '
                                                 r'again without retraining: python -m pe_research.evaluate'):
    experiment.run(config, str(tmp_path / 'run'))


def test_evaluate_scores_a_trained_run_at_other_lengths_in_its_own_directory(finished, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(finished, workdir)
  stdout = io_lib.StringIO()
  with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exit_info:
    cli.run(lambda flags: (evaluate.main(flags), sys.exit(0)), evaluate.define_flags,
            ['prog', f'--workdir={workdir}', '--config.eval.max_length=12'])
  assert exit_info.value.code == 0
  out = workdir / 'evaluations' / 'eval.max_length=12'
  assert f'results: {out}' in stdout.getvalue()
  ours, original = io.read_jsonl(out / 'eval.jsonl'), io.read_jsonl(workdir / 'eval.jsonl')
  assert sorted({r['length'] for r in ours}) == list(range(1, 13))
  # The same examples at the lengths both scored (a fixed key per length): the same scores.
  assert [r for r in ours if r['length'] <= 8] == original
  assert json.load(open(out / 'config.json'))['eval']['max_length'] == 12
  assert json.load(open(out / 'summary.json'))['step'] == 20
  assert open(workdir / 'eval.jsonl').read() == open(finished / 'eval.jsonl').read()  # Untouched.


def test_evaluate_reads_a_run_written_before_a_field_was_renamed_or_added(finished, tmp_path):
  """A config.json with train.length_buckets (since renamed train.length_parts) and without
  model.attention_scale (added since) evaluates as the run trained."""
  workdir = tmp_path / 'run'
  shutil.copytree(finished, workdir)
  stored = json.load(open(workdir / 'config.json'))
  stored['train']['length_buckets'] = stored['train'].pop('length_parts')
  del stored['model']['attention_scale']
  io.write_json_atomic(str(workdir / 'config.json'), stored)
  with contextlib.redirect_stdout(io_lib.StringIO()), pytest.raises(SystemExit) as exit_info:
    cli.run(lambda flags: (evaluate.main(flags), sys.exit(0)), evaluate.define_flags,
            ['prog', f'--workdir={workdir}', '--name=again'])
  assert exit_info.value.code == 0
  assert io.read_jsonl(workdir / 'evaluations' / 'again' / 'eval.jsonl') == io.read_jsonl(finished / 'eval.jsonl')
  again = json.load(open(workdir / 'evaluations' / 'again' / 'config.json'))
  assert again['train']['length_parts'] == stored['train']['length_buckets']
  assert again['model']['attention_scale'] == 'sqrt_dk' and 'length_buckets' not in again['train']


def test_ctrl_c_prints_one_line_and_the_run_resumes(tmp_path):
  config = small_config()
  # Still training, seconds after its first record, on any machine.
  config.train.update(steps=400, steps_per_call=20, checkpoint_every=20)
  overrides = [f'--config.{k}={v}' for k, v in experiment.flat_config(experiment.config_json(config)).items()]
  # Started with SIGINT blocked, as a parent can leave it (the mask survives exec): the run
  # must still stop on Ctrl-C.
  blocked = ('import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); '
             'os.execv(sys.executable, [sys.executable, "-m", "pe_research.main", *sys.argv[1:]])')
  command = [sys.executable, '-c', blocked, f'--config={os.path.join(ROOT, "configs", "default.py")}',
             f'--workdir={tmp_path / "run"}', *overrides]
  process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  while not io.read_jsonl(tmp_path / 'run' / 'train.jsonl') and process.poll() is None:
    time.sleep(0.01)
  assert process.poll() is None, 'the run ended before it could be interrupted'
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  assert stderr.strip().splitlines()[-1] == 'interrupted; run the same command again to resume'
  assert 'Traceback' not in stderr and not (tmp_path / 'run' / 'summary.json').exists()
  experiment.run(config, str(tmp_path / 'run'))
  experiment.run(config, str(tmp_path / 'reference'))
  assert io.read_jsonl(tmp_path / 'run' / 'eval.jsonl') == io.read_jsonl(tmp_path / 'reference' / 'eval.jsonl')


def test_result_files_follow_the_umask(tmp_path):
  umask = os.umask(0o022)
  os.umask(umask)
  io.write_json_atomic(str(tmp_path / 'a.json'), {'x': float('nan')})
  assert stat.S_IMODE(os.stat(tmp_path / 'a.json').st_mode) == 0o666 & ~umask
  assert open(tmp_path / 'a.json').read() == '{\n  "x": null\n}'  # Strict JSON.
