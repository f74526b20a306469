"""The report on a synthetic directory of runs: grouped scores in CSV and Markdown, plots,
failed and unfinished runs listed, TensorBoard curves."""

import csv
import glob
import os
import struct

import pytest

from pe_research import experiment, io, report

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def make_run(root, name, encoding, seed, accuracies, learning_rate=1e-3, finished=True, ceiling=None,
             task='parity_check'):
  """A run directory of `task` trained on lengths 1..2, with per-length token accuracies
  {seed: [accuracy at length 1, 2, ...]}; `ceiling` (per length) makes it a position-blind
  run with that ceiling."""
  run_dir = os.path.join(root, name)
  os.makedirs(run_dir)
  config = {'seed': seed, 'num_seeds': len(accuracies), 'task': {'name': task},
            'encoding': {'name': encoding}, 'train': {'max_length': 2, 'learning_rate': learning_rate,
                                                     'checkpoint_every': seed},
            'eval': {'max_length': len(next(iter(accuracies.values())))}}
  io.write_json_atomic(os.path.join(run_dir, 'config.json'), config)
  io.append_jsonl(os.path.join(run_dir, 'train.jsonl'), [
      {'seed': s, 'step': step, 'loss': 1 / step, 'token_accuracy': 0.5, 'sequence_accuracy': 0.5, 'steps_per_s': 9.0}
      for step in (10, 20) for s in accuracies
  ])
  if finished:
    io.write_jsonl_atomic(os.path.join(run_dir, 'eval.jsonl'), [
        {'seed': s, 'length': n + 1, 'token_accuracy': a, 'sequence_accuracy': a, 'in_training_range': n < 2,
         'position_blind_ceiling': 1.0 if ceiling is None else ceiling[n]}
        for s, per_length in accuracies.items() for n, a in enumerate(per_length)
    ])
    io.write_json_atomic(os.path.join(run_dir, 'summary.json'),
                         {'chance_accuracy': 0.5, 'position_blind': ceiling is not None})
  return run_dir


@pytest.fixture
def runs(tmp_path):
  root = str(tmp_path)
  # rope: two cells of one seed each (a grid over seeds), merged by the report.
  make_run(root, 'encoding=rope,seed=0', 'rope', 0, {0: [1.0, 1.0, 0.5, 0.7]})
  make_run(root, 'encoding=rope,seed=1', 'rope', 1, {1: [1.0, 0.8, 0.6, 0.6]})
  # alibi: two seeds in one run, at two learning rates.
  make_run(root, 'encoding=alibi,lr=1e-3', 'alibi', 0, {0: [1.0, 1.0, 0.9, 0.7], 1: [1.0, 1.0, 0.5, 0.5]})
  make_run(root, 'encoding=alibi,lr=3e-4', 'alibi', 0, {0: [1.0, 1.0, 0.6, 0.6], 1: [1.0, 1.0, 0.6, 0.6]}, 3e-4)
  make_run(root, 'encoding=none', 'none', 0, {0: [0.5] * 4}, finished=False)
  os.makedirs(os.path.join(root, 'encoding=nope'))
  io.write_json_atomic(os.path.join(root, 'encoding=nope', experiment.FAILED), {'error': 'config error: unknown'})
  return root


def test_report_table_groups_seeds_and_scores_unseen_lengths(runs):
  printed = report.write(runs)
  rows = list(csv.DictReader(open(os.path.join(runs, 'results.csv'))))
  assert [(r['task'], r['encoding'], r['train.learning_rate'], r['seeds']) for r in rows] == [
      ('parity_check', 'alibi', '0.0003', '2'), ('parity_check', 'alibi', '0.001', '2'),
      ('parity_check', 'rope', '0.001', '2'),
  ]
  values = [{k: float(v) for k, v in r.items() if k not in ('task', 'encoding') and v not in ('', 'True', 'False')}
            for r in rows]
  # Per seed: mean over lengths 1-2 (in distribution) and 3-4 (unseen); then over seeds.
  assert values[1]['unseen_mean'] == pytest.approx(0.65) and values[1]['unseen_std'] == pytest.approx(0.15)
  assert values[1]['unseen_max'] == pytest.approx(0.8) and values[1]['in_distribution_mean'] == pytest.approx(1.0)
  assert values[2]['in_distribution_mean'] == pytest.approx(0.95)
  assert values[2]['in_distribution_std'] == pytest.approx(0.05)
  assert values[2]['unseen_mean'] == pytest.approx(0.6) and values[2]['unseen_std'] == pytest.approx(0.0)
  assert values[0]['unseen_max'] == pytest.approx(0.6) and values[0]['chance'] == 0.5
  markdown = open(os.path.join(runs, 'results.md')).read()
  assert '| parity_check | rope | 0.001 | 2 | 95.0 ± 5.0 | 60.0 ± 0.0 | 60.0 | 50.0 | - |  |' in markdown
  assert '- failed: encoding=nope: config error: unknown' in markdown
  assert '- unfinished: encoding=none' in markdown
  assert '![heatmap.png](plots/heatmap.png)' in markdown
  for name in ('accuracy_vs_length_parity_check.png', 'heatmap.png'):
    path = os.path.join(runs, 'plots', name)
    assert open(path, 'rb').read(8) == PNG_MAGIC
    assert f'plot: {path}' in printed
  assert '| parity_check | alibi | 0.0003 | 2 | 100.0 ± 0.0 | 60.0 ± 0.0 | 60.0 | 50.0 | - |  |' in printed


def test_report_of_a_directory_without_finished_runs(tmp_path):
  make_run(str(tmp_path), 'run', 'rope', 0, {0: [1.0]}, finished=False)
  assert report.write(str(tmp_path)).startswith('no finished runs\n\n- unfinished: run')
  assert open(tmp_path / 'results.csv').read().startswith('task,encoding,seeds,in_distribution_mean,')


def test_report_flags_underfit_groups_and_position_blind_ceilings(tmp_path):
  root = str(tmp_path)
  # Lengths 1-2 in distribution, 3-4 unseen.
  make_run(root, 'encoding=none', 'none', 0, {0: [0.75, 0.7, 0.62, 0.6]}, ceiling=[0.8, 0.7, 0.65, 0.6],
           task='reverse_string')
  make_run(root, 'encoding=rope', 'rope', 0, {0: [1.0, 0.8, 0.5, 0.5]}, task='reverse_string')
  make_run(root, 'encoding=alibi', 'alibi', 0, {0: [1.0, 0.96, 0.9, 0.8]}, task='reverse_string')
  printed = report.write(root, underfit_threshold=0.95)
  rows = {r['encoding']: r for r in csv.DictReader(open(tmp_path / 'results.csv'))}
  assert {e: (r['underfit'], r['position_blind']) for e, r in rows.items()} == {
      'alibi': ('False', 'False'), 'none': ('True', 'True'), 'rope': ('True', 'False')}
  assert float(rows['none']['ceiling_in_distribution']) == pytest.approx(0.75)
  assert float(rows['none']['ceiling_unseen']) == pytest.approx(0.625)
  assert rows['rope']['ceiling_unseen'] == '' and float(rows['rope']['chance']) == 0.5
  markdown = open(tmp_path / 'results.md').read()
  for text in (markdown, printed):
    assert '| reverse_string | none | 1 | 72.5 ± 0.0 | 61.0 ± 0.0 | 61.0 | 50.0 | 75.0 / 62.5 | underfit, position-blind |' in text
    assert '| reverse_string | rope | 1 | 90.0 ± 0.0 | 50.0 ± 0.0 | 50.0 | 50.0 | - | underfit |' in text
    assert '| reverse_string | alibi | 1 | 98.0 ± 0.0 | 85.0 ± 0.0 | 85.0 | 50.0 | - |  |' in text
    assert 'underfit: in-distribution accuracy below 95%' in text and 'ceiling, position-blind:' in text
  # A lower threshold unflags rope; the legend then has no underfit line for it to explain.
  report.write(root, underfit_threshold=0.85)
  rows = {r['encoding']: r for r in csv.DictReader(open(tmp_path / 'results.csv'))}
  assert rows['rope']['underfit'] == 'False' and rows['none']['underfit'] == 'True'


def test_report_plots_draw_the_flags(tmp_path, monkeypatch):
  root = str(tmp_path)
  make_run(root, 'encoding=none', 'none', 0, {0: [0.75, 0.7, 0.62, 0.6]}, ceiling=[0.8, 0.7, 0.65, 0.6],
           task='reverse_string')
  make_run(root, 'encoding=rope', 'rope', 0, {0: [1.0, 0.8, 0.5, 0.5]}, task='reverse_string')
  make_run(root, 'encoding=alibi', 'alibi', 0, {0: [1.0, 0.96, 0.9, 0.8]}, task='reverse_string')
  saved = {}
  monkeypatch.setattr(report, '_save', lambda fig, path: saved.__setitem__(os.path.basename(path), fig))
  report.write(root)
  (lines_ax,) = saved['accuracy_vs_length_reverse_string.png'].axes
  lines = {line.get_label(): line for line in lines_ax.get_lines()}
  assert lines['rope (underfit)'].get_linestyle() == '--' and lines['rope (underfit)'].get_alpha() == 0.5
  assert 'none (underfit, position-blind)' in lines
  assert lines['alibi'].get_linestyle() == '-'
  assert list(lines['position-blind ceiling'].get_ydata()) == [0.8, 0.7, 0.65, 0.6]
  assert list(lines['chance'].get_ydata()) == [0.5, 0.5]
  heatmap_ax = saved['heatmap.png'].axes[0]
  assert sorted(t.get_text() for t in heatmap_ax.texts) == ['50†', '61†‡', '85']
  assert [p.get_hatch() for p in heatmap_ax.patches] == ['//', '//']
  image = heatmap_ax.images[0]
  # White at chance: rope's 50% sits at the colour scale's centre.
  assert image.norm(0.0) == 0.5 and image.get_array()[0, list(heatmap_ax.get_xticklabels()).index(
      next(t for t in heatmap_ax.get_xticklabels() if t.get_text() == 'rope'))] == 0.0


def read_scalars(path):
  """(tag, step, value) of the scalars in a TensorBoard event file (TFRecord framing: length,
  its CRC, the event, its CRC)."""
  event_pb2 = pytest.importorskip('tensorboardX.proto.event_pb2')
  data, position, scalars = open(path, 'rb').read(), 0, []
  while position < len(data):
    (length,) = struct.unpack('<Q', data[position:position + 8])
    event = event_pb2.Event.FromString(data[position + 12:position + 12 + length])
    scalars += [(value.tag, event.step, value.simple_value) for value in event.summary.value]
    position += 12 + length + 4
  return scalars


def test_tensorboard_curves_per_run_and_seed(runs):
  pytest.importorskip('tensorboardX')
  logdir = os.path.join(runs, 'tensorboard')
  assert f'tensorboard: {logdir}' in report.write(runs, tensorboard=True)
  for run, seed in [('encoding=rope,seed=1', 1), ('encoding=alibi,lr=1e-3', 0), ('encoding=alibi,lr=1e-3', 1),
                    ('encoding=none', 0)]:
    (events,) = glob.glob(os.path.join(logdir, run, f'seed={seed}', 'events.out.tfevents.*'))
    scalars = read_scalars(events)
    assert ('train/loss', 10, pytest.approx(0.1)) in scalars and ('train/loss', 20, pytest.approx(0.05)) in scalars
    assert {tag for tag, _, _ in scalars} == {f'train/{k}' for k in ('loss', 'token_accuracy', 'sequence_accuracy',
                                                                    'steps_per_s')}
