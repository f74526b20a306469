"""Sweeps: cells from a grid, finished cells skipped, failed cells recorded while the sweep
goes on, the command line ending with the table; the shipped sweep files load."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from pe_research import experiment, io, sweep
from tests.conftest import ROOT, load_script, tiny_config

SWEEP_FILES = sorted(glob.glob(os.path.join(ROOT, 'configs', 'sweeps', '*.py')))


def small_base():
  """A run config that trains in two compiled calls of 5 steps and evaluates 2 lengths."""
  config = tiny_config(num_seeds=2, model__model_dim=16, model__num_heads=2, eval__max_length=2)
  config.train.update(steps=10, steps_per_call=5, max_length=1)
  return config


def test_cells_are_named_by_their_grid_values_and_bad_ones_carry_the_error():
  cells = sweep.cells(sweep.make(small_base(), {
      'task.name': ['parity_check', 'no_such_task'], 'seed': [0, 2], 'train.lr': [0.1],
  }))
  assert [name for name, _, _ in cells] == [
      'task=parity_check,seed=0,train.lr=0.1', 'task=parity_check,seed=2,train.lr=0.1',
      'task=no_such_task,seed=0,train.lr=0.1', 'task=no_such_task,seed=2,train.lr=0.1',
  ]
  assert all(config is None and error.startswith('grid field train.lr=0.1: ') for _, config, error in cells)
  (_, config, error), *_ = sweep.cells(sweep.make(small_base(), {'seed': [4], 'train.learning_rate': [3e-3]}))
  assert error is None and (config.seed, config.train.learning_rate, config.num_seeds) == (4, 3e-3, 2)
  (_, _, error), = sweep.cells(sweep.make(small_base(), {'task.name': ['no_such_task']}))
  assert error.startswith("config.task.name='no_such_task' is unknown; allowed: ")


def test_a_list_of_grids_gives_the_union_of_their_cells():
  made = sweep.make(small_base(), [{'task.name': ['parity_check'], 'encoding.name': ['rope', 'alibi']},
                                   {'task.name': ['reverse_string'], 'encoding.name': ['none']}])
  sweep.check(made)
  cells = sweep.cells(made)
  assert [name for name, _, _ in cells] == [
      'task=parity_check,encoding=rope', 'task=parity_check,encoding=alibi', 'task=reverse_string,encoding=none']
  assert [(c.task.name, c.encoding.name) for _, c, _ in cells] == [
      ('parity_check', 'rope'), ('parity_check', 'alibi'), ('reverse_string', 'none')]
  with pytest.raises(sweep.cli.UsageError, match='the grid is empty'):
    sweep.check(sweep.make(small_base(), [{'seed': [0]}, {}]))


def test_sweep_skips_finished_cells_and_records_failed_ones(tmp_path, capsys):
  config = sweep.make(small_base(), {'encoding.name': ['alibi', 'rotary'], 'train.learning_rate': [3e-3, 1e-3]})
  workdir = str(tmp_path)
  # A cell whose directory holds a run of another config fails when it starts.
  other = tmp_path / 'encoding=alibi,train.learning_rate=0.001'
  other.mkdir()
  io.write_json_atomic(str(other / 'config.json'), {'train': {'steps': 7, 'learning_rate': 0.5}})
  assert sweep.run(config, workdir) == {
      'encoding=alibi,train.learning_rate=0.003': 'done',
      'encoding=alibi,train.learning_rate=0.001': 'failed',
      'encoding=rotary,train.learning_rate=0.003': 'failed',
      'encoding=rotary,train.learning_rate=0.001': 'failed',
  }
  out = capsys.readouterr().out
  assert ("encoding=rotary,train.learning_rate=0.003: FAILED: config error: config.encoding.name='rotary' is unknown; "
          'allowed: ') in out
  assert 'encoding=alibi,train.learning_rate=0.001: FAILED: ' in out and 'holds a run of another config' in out
  assert 'Traceback' not in out
  error = io.read_json(os.path.join(workdir, 'encoding=rotary,train.learning_rate=0.001', experiment.FAILED))['error']
  assert error.startswith("config error: config.encoding.name='rotary' is unknown")
  done = os.path.join(workdir, 'encoding=alibi,train.learning_rate=0.003', 'summary.json')
  finished_at = os.stat(done).st_mtime_ns

  status = sweep.run(config, workdir)
  assert status['encoding=alibi,train.learning_rate=0.003'] == 'skipped'
  assert os.stat(done).st_mtime_ns == finished_at
  assert list(status.values()).count('failed') == 3
  assert json.load(open(os.path.join(workdir, 'sweep.json')))['grid']['encoding.name'] == ['alibi', 'rotary']


SWEEP_FILE = '''
import os
from pe_research import sweep

def get_config():
  base = sweep.load_config({default!r})
  base.update_from_flattened_dict({overrides!r})
  return sweep.make(base, {{'task.name': ['parity_check', 'no_such_task'], 'encoding.name': ['alibi']}})
'''


def test_command_line_runs_the_sweep_and_prints_the_table(tmp_path):
  overrides = {'num_seeds': 2, 'model.model_dim': 16, 'model.num_heads': 2, 'train.steps_per_call': 5,
               'train.max_length': 1, 'eval.max_length': 2, 'eval.batch_size': 8}
  sweep_file = tmp_path / 'tiny.py'
  sweep_file.write_text(SWEEP_FILE.format(default=os.path.join(ROOT, 'configs', 'default.py'), overrides=overrides))
  result = subprocess.run(
      [sys.executable, '-m', 'pe_research.sweep', f'--sweep={sweep_file}', f'--workdir={tmp_path / "runs"}',
       '--sweep.base.train.steps=10'],
      cwd=ROOT, capture_output=True, text=True,
  )
  assert result.returncode == 1, result.stderr
  assert "task=no_such_task,encoding=alibi: FAILED: config error: config.task.name='no_such_task'" in result.stdout
  assert '| parity_check | alibi | 2 |' in result.stdout
  assert f'plot: {tmp_path / "runs" / "plots" / "accuracy_vs_length_parity_check.png"}' in result.stdout
  assert '1 of 2 cells failed: task=no_such_task,encoding=alibi' in result.stderr
  assert 'Traceback' not in result.stdout + result.stderr
  assert io.read_json(tmp_path / 'runs' / 'task=parity_check,encoding=alibi' / 'config.json')['train']['steps'] == 10


@pytest.mark.parametrize('path', SWEEP_FILES, ids=os.path.basename)
def test_shipped_sweep_files_document_their_command_and_build_cells(path):
  spec = importlib.util.spec_from_file_location('sweep_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  name = os.path.splitext(os.path.basename(path))[0]
  assert f'python -m pe_research.sweep --sweep=configs/sweeps/{name}.py --workdir=runs/{name}' in module.__doc__
  assert 'Expected' in module.__doc__
  cells = sweep.cells(module.get_config())
  assert cells and len({name for name, _, _ in cells}) == len(cells)
  # Cells may name tasks and encodings still to come; any other error is a bug of the file.
  for cell, _, error in cells:
    assert error is None or ' is unknown; allowed: ' in error, (cell, error)
  if name == 'quick':
    assert all(error is None for _, _, error in cells)


def test_kept_records_let_a_sweep_resume_in_a_fresh_workdir(tmp_path):
  """scripts/keep_records.py copies each finished cell's config, summary and eval records
  (not an unfinished cell); copied back into a new workdir, the sweep skips those cells."""
  keep_records = load_script('keep_records')
  config = sweep.make(small_base(), {'encoding.name': ['alibi']})
  first, records, second = (str(tmp_path / d) for d in ('first', 'records', 'second'))
  assert sweep.run(config, first) == {'encoding=alibi': 'done'}
  unfinished = os.path.join(first, 'encoding=rope')
  os.makedirs(unfinished)
  io.write_json_atomic(os.path.join(unfinished, experiment.CONFIG), {'train': {'steps': 7}})

  assert keep_records.keep(first, records) == (['encoding=alibi'], ['encoding=rope: not finished'])
  assert sorted(os.listdir(records)) == ['encoding=alibi']
  assert sorted(os.listdir(os.path.join(records, 'encoding=alibi'))) == ['config.json', 'eval.jsonl', 'summary.json']
  assert keep_records.keep(records, second) == (['encoding=alibi'], [])
  assert sweep.run(config, second) == {'encoding=alibi': 'skipped'}
  assert open(os.path.join(second, 'encoding=alibi', 'eval.jsonl')).read() == open(
      os.path.join(first, 'encoding=alibi', 'eval.jsonl')).read()
