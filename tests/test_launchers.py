"""Launchers: cells placed on local worker processes, a real local Ray cluster and submitit's
local executor give the results of a sweep run in this process; a killed worker's cell
resumes; a launcher that cannot start says so in one line."""

import builtins
import glob
import json
import os
import signal
import threading
import time

import pytest

from pe_research import cli, launchers, sweep
from tests.conftest import tiny_config

ENCODINGS = ['rope', 'alibi']


def small_sweep(steps=10, encodings=ENCODINGS):
  config = tiny_config(num_seeds=1, model__model_dim=16, model__num_heads=2, eval__max_length=3)
  config.train.update(steps=steps, steps_per_call=5, max_length=2, checkpoint_every=5)
  return sweep.make(config, {'encoding.name': encodings})


def results(workdir):
  """{cell: (eval.jsonl text, summary's scores)} of a sweep's cells."""
  out = {}
  for name in ENCODINGS:
    cell = os.path.join(workdir, f'encoding={name}')
    summary = json.load(open(os.path.join(cell, 'summary.json')))
    out[name] = (open(os.path.join(cell, 'eval.jsonl')).read(),
                 summary['in_distribution_accuracy'], summary['unseen_lengths_accuracy'])
  return out


@pytest.fixture(scope='module')
def in_process(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('in_process'))
  assert sweep.run(small_sweep(), workdir) == {f'encoding={e}': 'done' for e in ENCODINGS}
  return results(workdir)


def test_placements_share_the_cores_or_give_each_worker_a_gpu():
  assert launchers.placements(2, [0, 1], 0) == [{'cores': [0]}, {'cores': [1]}]
  assert launchers.placements(0, [0, 1, 2], 0) == [{'cores': [0]}, {'cores': [1]}, {'cores': [2]}]
  assert launchers.placements(2, [0, 1, 2, 3, 4], 0) == [{'cores': [0, 1, 2]}, {'cores': [3, 4]}]
  assert launchers.placements(3, [0, 1], 0) == [{'cores': [0, 1]}] * 3
  assert launchers.placements(0, [0, 1], 4) == [{'gpu': 0}, {'gpu': 1}, {'gpu': 2}, {'gpu': 3}]
  assert launchers.Local(8).placements(1) == launchers.Local(1).placements(5)  # One worker: in this process.
  assert launchers.Local(1).in_process(5) and not launchers.Local(2).in_process(2)


def test_local_workers_give_the_results_of_one_process(tmp_path, in_process):
  workdir = str(tmp_path)
  assert sweep.run(small_sweep(), workdir, launchers.Local(2)) == {f'encoding={e}': 'done' for e in ENCODINGS}
  assert results(workdir) == in_process


def _kill_when_checkpointed(cell_dir: str, killed: list[int]) -> None:
  """SIGKILLs the worker process of `cell_dir` once its first checkpoint is written."""
  deadline = time.time() + 120
  while time.time() < deadline and not glob.glob(os.path.join(cell_dir, 'checkpoints', '*')):
    time.sleep(0.005)
  for cmdline in glob.glob('/proc/[0-9]*/cmdline'):
    try:
      args = open(cmdline, 'rb').read().split(b'\0')
    except OSError:
      continue
    if b'pe_research.launchers' in args and cell_dir.encode() in args:
      os.kill(int(cmdline.split('/')[2]), signal.SIGKILL)
      killed.append(int(cmdline.split('/')[2]))


def test_a_killed_worker_s_cell_resumes(tmp_path):
  workdir = str(tmp_path)
  made = small_sweep(steps=400, encodings=['rope', 'alibi'])
  killed, reports = [], []
  watcher = threading.Thread(target=_kill_when_checkpointed, args=(os.path.join(workdir, 'encoding=rope'), killed))
  watcher.start()
  cells = [launchers.Cell(name, sweep.experiment.config_json(config), os.path.join(workdir, name), 400)
           for name, config, _ in sweep.cells(made)]
  status = launchers.Local(2).run(cells, lambda cell, result, line: reports.append((cell.name, result)) or result,
                                  workdir)
  watcher.join()
  assert killed, 'the worker finished before it could be killed'
  assert ('encoding=rope', 'restarted') in reports
  assert status == {'encoding=rope': 'done', 'encoding=alibi': 'done'}
  steps = [json.loads(line)['step'] for line in open(os.path.join(workdir, 'encoding=rope', 'train.jsonl'))]
  assert steps == sorted(set(steps)) and steps[-1] == 400  # Cut back to the checkpoint, then trained on.


def test_ray_runs_the_cells_on_a_local_cluster(tmp_path, in_process):
  pytest.importorskip('ray', reason="the ray extra: pip install -e '.[ray]'")
  workdir = str(tmp_path)
  launcher = launchers.Ray(cpus_per_cell=1)
  assert sweep.run(small_sweep(), workdir, launcher) == {f'encoding={e}': 'done' for e in ENCODINGS}
  for name, (records, inside, unseen) in results(workdir).items():
    assert (inside, unseen) == pytest.approx(in_process[name][1:], abs=1e-6)  # Another process: same numbers.


def test_slurm_runs_the_cells_as_a_job_array(tmp_path, in_process):
  pytest.importorskip('submitit', reason="the slurm extra: pip install -e '.[slurm]'")
  workdir = str(tmp_path)
  launcher = launchers.Slurm(executor='local')
  assert sweep.run(small_sweep(), workdir, launcher) == {f'encoding={e}': 'done' for e in ENCODINGS}
  for name, (records, inside, unseen) in results(workdir).items():
    assert (inside, unseen) == pytest.approx(in_process[name][1:], abs=1e-6)
  assert glob.glob(os.path.join(workdir, 'slurm', '*', '*.out'))  # The jobs' logs.


def test_a_workdir_the_workers_do_not_see_is_refused(tmp_path):
  with pytest.raises(launchers.LauncherError, match=r'--workdir=.* is not visible to the workers'):
    launchers.check_shared(str(tmp_path), lambda path: None)
  assert os.listdir(tmp_path) == []  # The probe is removed.
  launchers.check_shared(str(tmp_path), launchers.read_file)


def test_an_unreachable_ray_address_is_one_line():
  pytest.importorskip('ray')
  with pytest.raises(launchers.LauncherError, match=r'--ray_address=127.0.0.1:1: no Ray cluster answers there'):
    launchers.Ray('127.0.0.1:1').run([], None, '.')


def test_a_missing_extra_says_how_to_install_it(monkeypatch):
  real_import = builtins.__import__

  def no_ray(name, *args, **kwargs):
    if name in ('ray', 'submitit'):
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', no_ray)
  with pytest.raises(launchers.LauncherError, match=r"--launcher=ray needs ray: pip install -e '.\[ray\]'"):
    launchers.Ray()
  with pytest.raises(launchers.LauncherError, match=r"--launcher=slurm needs submitit: pip install -e '.\[slurm\]'"):
    launchers.Slurm()


def test_the_command_line_refuses_an_unknown_launcher(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.run(sweep.main, sweep.define_flags, ['sweep', '--sweep=configs/sweeps/quick.py', f'--workdir={tmp_path}',
                                             '--launcher=mpi'])
  assert exit_info.value.code == 2
  assert 'launcher' in capsys.readouterr().err


def test_a_dry_run_lists_the_cells_and_estimates_them_from_measured_speed(tmp_path, in_process):
  measured = []

  def measure(config):
    measured.append(config.task.name)
    return sweep.estimate.Speed(compile_s=30.0, seconds_per_step=0.5)

  made = small_sweep()
  made.grid['task.name'] = ['reverse_string', 'parity_check', 'no_such_task']
  text = sweep.dry_run(made, str(tmp_path), measure)
  assert measured == ['reverse_string', 'parity_check']  # One cell timed per task.
  assert 'encoding=rope,task=reverse_string: to run, about 35 s' in text  # 30 s + 10 steps x 0.5 s.
  assert "encoding=alibi,task=no_such_task: config error: config.task.name='no_such_task' is unknown" in text
  assert text.endswith('4 of 6 cells to run: about 0.0 device-hours of training on cpu (one cell per device or CPU worker; '
                       'evaluation comes on top)')
  assert text.endswith('about 0.0 device-hours of training on cpu (one cell per device or CPU worker; '
                       'evaluation comes on top)')
  assert os.listdir(tmp_path) == []  # Nothing written.
  (_, config, _), = sweep.cells(small_sweep(encodings=['rope']))
  speed = sweep.estimate.measure(config)  # A real measurement of a tiny model.
  assert 0 < speed.seconds_per_step < speed.compile_s
