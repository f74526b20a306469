"""Every bad input is one line, exit status 2, naming the flag, field or file, before
anything compiles; run in-process through the same `cli.run` the commands use."""

import contextlib
import errno
import io as io_lib
import os
import re

import pytest

from pe_research import cli, evaluate, main, report, sweep
from tests.conftest import ROOT

DEFAULT = os.path.join(ROOT, 'configs', 'default.py')
SMALL = ['--config.train.steps=20', '--config.train.steps_per_call=10', '--config.eval.max_length=20',
         '--config.eval.batch_size=8']

FILES = {
    'syntax.py': 'def get_config(:\n  pass\n',
    'no_get_config.py': 'x = 1\n',
    'returns_int.py': 'def get_config():\n  return 3\n',
    'raises.py': 'def get_config():\n  raise RuntimeError("boom")\n',
    'no_section.py': ('import ml_collections\n\ndef get_config():\n'
                      '  return ml_collections.ConfigDict({"task": {"name": "copy"}})\n'),
    'sweep_no_grid.py': f'from pe_research import sweep\n\ndef get_config():\n  return sweep.load_config({DEFAULT!r})\n',
    'sweep_dict.py': 'def get_config():\n  return {"base": {}, "grid": {}}\n',
    'sweep_string.py': ('from pe_research import sweep\n\ndef get_config():\n'
                        f'  base = sweep.load_config({DEFAULT!r})\n'
                        '  return sweep.make(base, {\n      "encoding.name": "rope",\n  })\n'),
    'sweep_empty.py': ('from pe_research import sweep\n\ndef get_config():\n'
                       f'  return sweep.make(sweep.load_config({DEFAULT!r}), {{}})\n'),
}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  directory = tmp_path_factory.mktemp('files')
  for name, text in FILES.items():
    (directory / name).write_text(text)
  (directory / 'a_file').write_text('')
  return directory


def run_command(command, argv):
  """(exit status, stderr lines) of `cli.run` of a command module on argv."""
  stderr = io_lib.StringIO()
  with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
    cli.run(command.main, command.define_flags, ['prog', *argv])
  return exit_info.value.code, [line for line in stderr.getvalue().splitlines() if line.strip()]


# (argv after --config=configs/default.py --workdir=W, the one line's pattern)
MAIN_CASES = [
    (['--config.train.stepz=3'], r"usage error: --config.train.stepz=3: no such field; did you mean 'steps'\?"),
    (['--config.encoding.rope.scalling=pi'], r"--config.encoding.rope.scalling=pi: no such field; did you mean 'scaling'"),
    (['--config.train.steps=abc'], r"usage error: --config.train.steps=abc: invalid literal for int\(\)"),
    (['--config.model.causal=maybe'], r'--config.model.causal=maybe'),
    (['stray'], r"usage error: unexpected argument 'stray'"),
    (['--nope=1'], r"usage error: Unknown command line flag 'nope'"),
    (['--config.model.num_heads=5'], r'config error: config.model.num_heads=5 does not divide config.model.model_dim=64'),
    (['--config.train.learning_rate=inf'], r'config error: config.train.learning_rate=inf must be positive and finite'),
    (['--config.train.learning_rate=nan'], r'config.train.learning_rate=nan must be positive and finite'),
    (['--config.train.grad_clip=0'], r'config.train.grad_clip=0.0 must be positive and finite'),
    (['--config.model.dropout=-0.1'], r'config.model.dropout=-0.1 must be in \[0, 1\)'),
    (['--config.seed=-1'], r'config.seed=-1 must be >= 0'),
    (['--config.train.schedule=linear'], r"config.train.schedule='linear' is unknown; allowed: constant, cosine"),
    (['--config.encoding.name=xpos', '--config.model.causal=True', '--config.encoding.xpos.scale_base=inf'],
     r'config.encoding.xpos.scale_base=inf must be a finite number'),
    (['--config.encoding.name=fire', '--config.encoding.fire.init_threshold=inf'],
     r'config.encoding.fire.init_threshold=inf must be a finite number'),
    (['--config.eval.logit_budget=1'],
     r'config.eval.logit_budget=1 is below one query row .* allowed: 0 \(the platform default\) or >= 160'),
    (['--config.model.num_layers=100000'],
     r'config.model.num_layers=100000 x config.train.length_parts=4 copies of a block would take minutes to trace'),
    (['--config.model.model_dim=1048576', '--config.model.num_heads=1'],
     r'config error: the run needs an estimated [\d.]+ TiB .* but this machine has'),
    (['--config.train.batch_size=100000000'], r'the run needs an estimated [\d.]+ TiB'),
    (['--config.num_seeds=1000000'], r'the run needs an estimated [\d.]+ TiB .* x 1000000 seeds'),
    (['--config.task.name=reverse'], r"config.task.name='reverse' is unknown; allowed: .*reverse_string"),
    (['--config.encoding.positions.sampler=randomized', '--config.encoding.positions.max_length=10'],
     r'config.encoding.positions.max_length=10 is shorter than the longest sequence'),
]


@pytest.mark.parametrize('argv, pattern', MAIN_CASES, ids=[' '.join(a)[:60] for a, _ in MAIN_CASES])
def test_a_bad_flag_or_value_is_one_line(argv, pattern, tmp_path):
  status, lines = run_command(main, [f'--config={DEFAULT}', f'--workdir={tmp_path}', *SMALL, *argv])
  assert status == 2 and len(lines) == 1 and re.search(pattern, lines[0]), lines
  assert os.listdir(tmp_path) == []  # Refused before anything ran.


@pytest.mark.parametrize('argv, pattern', [
    ([], r'^usage error: --config is required'),
    (['--config=nope.py'], r'^usage error: --config=nope.py: no such file nope.py'),
    (['--config=FILES'], r'^usage error: --config=.*: .* is a directory'),
    (['--config=FILES/syntax.py'], r'^usage error: .*syntax.py:1: syntax error'),
    (['--config=FILES/no_get_config.py'], r'no_get_config.py has no get_config\(\) function'),
    (['--config=FILES/returns_int.py'], r'returns_int.py: get_config\(\) returned a int; allowed: an ml_collections'),
    (['--config=FILES/raises.py'], r'^usage error: .*raises.py:2: RuntimeError: boom$'),
    (['--config=FILES/no_section.py'], r'^config error: .*no_section.py: config.seed is missing'),
    ([f'--config={DEFAULT}:huge'], r"default.py:\d+: ValueError: unknown config variant 'huge'"),
])
def test_a_bad_config_file_names_the_file_and_line(argv, pattern, files, tmp_path):
  argv = [a.replace('FILES', str(files)) for a in argv]
  status, lines = run_command(main, [*argv, f'--workdir={tmp_path}'])
  assert status == 2 and len(lines) == 1 and re.search(pattern, lines[0]), lines


@pytest.mark.parametrize('workdir, pattern', [
    ('', r'^usage error: --workdir is empty'),
    (None, r'^usage error: --workdir is required'),
    ('FILES/a_file', r'--workdir=.*a_file is a file'),
    ('FILES/a_file/below', r'--workdir=.*a_file/below cannot be created: Not a directory'),
])
def test_a_bad_workdir_is_one_line(workdir, pattern, files):
  argv = [f'--config={DEFAULT}', *SMALL] + ([] if workdir is None else [f'--workdir={workdir.replace("FILES", str(files))}'])
  status, lines = run_command(main, argv)
  assert status == 2 and len(lines) == 1 and re.search(pattern, lines[0]), lines


def test_distributed_without_a_cluster_is_one_line(tmp_path, monkeypatch):
  import jax

  def no_cluster():
    raise ValueError('coordinator_address should be defined.\nMore text from JAX')

  monkeypatch.setattr(jax.distributed, 'initialize', no_cluster)
  status, lines = run_command(main, [f'--config={DEFAULT}', f'--workdir={tmp_path}', '--distributed'])
  assert status == 2 and len(lines) == 1
  assert lines[0].startswith('usage error: --distributed: jax.distributed.initialize() failed (coordinator_address')


@pytest.mark.parametrize('process_id, expected', [
    ('1', r'failed \(stopped here\)'),
    ('one', r"JAX_PROCESS_ID='one' is not an integer; allowed: e.g. JAX_PROCESS_ID=0$"),
])
def test_distributed_takes_the_process_count_and_id_from_the_environment(tmp_path, monkeypatch, process_id, expected):
  import jax

  given = {}

  def stop(**kwargs):  # JAX itself reads only JAX_COORDINATOR_ADDRESS: main passes these two.
    given.update(kwargs)
    raise ValueError('stopped here')

  monkeypatch.setattr(jax.distributed, 'initialize', stop)
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', process_id)
  status, lines = run_command(main, [f'--config={DEFAULT}', f'--workdir={tmp_path}', '--distributed'])
  assert status == 2 and len(lines) == 1 and re.search(expected, lines[0]), lines
  assert given == ({'num_processes': 2, 'process_id': 1} if process_id == '1' else {})


@pytest.mark.parametrize('name, pattern', [
    ('missing.py', r'^usage error: --sweep=.*missing.py: no such file'),
    ('sweep_no_grid.py', r'sweep_no_grid.py: get_config\(\) must return sweep.make\(base, grid\)'),
    ('sweep_dict.py', r'sweep_dict.py: get_config\(\) returned a dict; allowed: an ml_collections.ConfigDict'),
    ('sweep_string.py', r"sweep_string.py:6: grid field encoding.name='rope' must be a non-empty list of values"),
    ('sweep_empty.py', r'sweep_empty.py: the grid is empty'),
])
def test_a_bad_sweep_file_is_one_line(name, pattern, files, tmp_path):
  status, lines = run_command(sweep, [f'--sweep={files / name}', f'--workdir={tmp_path / "runs"}'])
  assert status == 2 and len(lines) == 1 and re.search(pattern, lines[0]), lines
  assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('what', ['missing', 'a file'])
def test_report_of_a_missing_directory_or_a_file_is_one_line(what, files, capsys):
  path = files / ('nothing_here' if what == 'missing' else 'a_file')
  with pytest.raises(SystemExit) as exit_info:
    report.main([str(path)])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == f'usage error: {path} is {what}; allowed: a directory of runs, e.g. a sweep workdir\n'


def test_evaluate_needs_a_trained_run(tmp_path):
  status, lines = run_command(evaluate, [f'--workdir={tmp_path}'])
  assert status == 2 and lines == [f'usage error: --workdir={tmp_path} holds no run (no config.json)']


@pytest.mark.parametrize('error, pattern', [
    (KeyboardInterrupt(), r'^interrupted; run the same command again to resume$'),
    (OSError(errno.ENOSPC, 'No space left on device', '/runs/x/eval.jsonl'),
     r'^disk full: /runs/x/eval.jsonl: No space left on device; run the same command again to resume$'),
    (RuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 12 bytes\ndetails'),
     r'^out of memory: RESOURCE_EXHAUSTED: Out of memory allocating 12 bytes; use a smaller'),
])
def test_what_a_run_meets_is_one_line(error, pattern, tmp_path, monkeypatch):
  def failing_main(flag_values):
    raise error

  def exit_here(status):  # Ctrl-C ends the process with os._exit, which would end pytest too.
    raise SystemExit(status)

  monkeypatch.setattr(os, '_exit', exit_here)

  stderr = io_lib.StringIO()
  with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
    cli.run(failing_main, main.define_flags, ['prog', f'--config={DEFAULT}', f'--workdir={tmp_path}'])
  assert exit_info.value.code == (130 if isinstance(error, KeyboardInterrupt) else 1)
  assert re.search(pattern, stderr.getvalue().strip()) and len(stderr.getvalue().splitlines()) == 1
