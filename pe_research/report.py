"""Tables and plots from run directories.

    python -m pe_research.report runs/quick [--underfit_threshold=0.95] [--tensorboard]

Every folder under the directory with a config.json is a run (a sweep's cells, or runs of
`pe_research.main`). Runs that differ only in their seeds are one group: a task, an
encoding and any other field that varies between the runs (a learning rate, a position
sampler). Scores are token accuracies from eval.jsonl, averaged per seed over the training
lengths (in distribution) and over the longer, unseen lengths; then, over the seeds of a
group, mean +- std (population std, 0 for one seed) and max (how Deletang et al. 2023 and
Ruoss et al. 2023 report).

What a reader must know to read a score is flagged, in every output:
  chance     the best input-blind guess (`Task.chance_accuracy`);
  ceiling    for a position-blind model (bidirectional attention, no positions: all its
             answer slots get the same output), the best accuracy any such model can reach
             on the evaluated examples (`training.metrics.position_blind_ceiling`), in
             distribution / unseen; such a row is flagged `position-blind`;
  underfit   a group whose mean in-distribution accuracy is below `--underfit_threshold`
             (95% by default): it never learned its task on the training lengths, so its
             unseen-lengths score does not measure extrapolation.

Written next to the runs:
  results.csv   one row per group: task, encoding, the other varying fields, seeds,
                in_distribution_{mean,std}, unseen_{mean,std,max}, chance,
                ceiling_{in_distribution,unseen} (empty unless position-blind),
                position_blind, underfit (fractions);
  results.md    the same table in percent with a flags column and its legend, the plots,
                and the failed and unfinished runs;
  plots/accuracy_vs_length_<task>.png  accuracy per length, one line per group (mean over
                seeds, band from min to max; underfit groups dashed and faded), training
                lengths shaded, chance dashed, a position-blind ceiling dotted;
  plots/heatmap.png  mean unseen-lengths accuracy, task x group, coloured by accuracy above
                chance (white at chance, red below, blue above), underfit cells hatched and
                marked;
  tensorboard/  with --tensorboard: training curves of every run and seed, for
                `tensorboard --logdir <dir>/tensorboard` (needs `pip install -e '.[tensorboard]'`).
"""

import argparse
import collections
import csv
import dataclasses
import glob
import io as io_lib
import math
import os
import shutil

import numpy as np
from absl import logging
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pe_research import evaluation, experiment, io
from pe_research.cli import one_line
from pe_research.tasks import get_task

# The columns of results.csv, but the varying fields that follow the encoding.
_ROW_COLUMNS = ('task', 'encoding', 'seeds', 'in_distribution_mean', 'in_distribution_std', 'unseen_mean',
                'unseen_std', 'unseen_max', 'chance', 'ceiling_in_distribution', 'ceiling_unseen', 'position_blind',
                'underfit', 'diverged_seeds')
# A group whose mean in-distribution accuracy is below this never learned its task.
UNDERFIT_THRESHOLD = 0.95
# Fields that never split runs into groups: seeds merge, workflow fields change no result,
# and task and encoding are columns of their own.
_NOT_GROUPED = ('seed', 'num_seeds', 'task.name', 'encoding.name', *experiment.WORKFLOW_FIELDS)


@dataclasses.dataclass
class Group:
  """Finished runs that differ only in their seeds."""

  task: str
  encoding: str
  # (field, value) of the other fields that vary between the reported runs.
  others: tuple[tuple[str, object], ...]
  train_max_length: int
  chance: float
  # Whether the model cannot tell its answer slots apart (`Transformer.position_blind`).
  position_blind: bool = False
  # Seeds left out because they diverged (their eval.jsonl line says so).
  diverged: int = 0
  # seed -> eval.jsonl records of that seed.
  records: dict[int, list[dict]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))

  @property
  def label(self) -> str:
    return ' '.join([self.encoding, *(f'{field}={value}' for field, value in self.others)])

  def row(self, underfit_threshold: float = UNDERFIT_THRESHOLD) -> dict:
    """The group's line of results.csv."""
    scores = [evaluation.summarize(r, self.train_max_length) for r in self.records.values()]
    inside = [s['in_distribution_accuracy'] for s in scores]
    unseen = [s['unseen_lengths_accuracy'] for s in scores]
    ceiling = {'in_distribution_accuracy': None, 'unseen_lengths_accuracy': None}
    if self.position_blind:  # Every seed saw the same examples: the first seed's ceiling.
      ceiling = evaluation.summarize(next(iter(self.records.values())), self.train_max_length,
                                     'position_blind_ceiling')
    return {
        'task': self.task, 'encoding': self.encoding, **dict(self.others), 'seeds': len(scores),
        'in_distribution_mean': float(np.mean(inside)), 'in_distribution_std': float(np.std(inside)),
        'unseen_mean': float(np.mean(unseen)), 'unseen_std': float(np.std(unseen)), 'unseen_max': float(np.max(unseen)),
        'chance': self.chance, 'ceiling_in_distribution': ceiling['in_distribution_accuracy'],
        'ceiling_unseen': ceiling['unseen_lengths_accuracy'], 'position_blind': self.position_blind,
        'underfit': bool(np.mean(inside) < underfit_threshold), 'diverged_seeds': self.diverged,
    }

  def curve(self, field: str = 'token_accuracy') -> tuple[np.ndarray, np.ndarray]:
    """(lengths, `field` [seeds, lengths]) over the lengths every seed has."""
    by_seed = [{r['length']: r[field] for r in records} for records in self.records.values()]
    lengths = np.array(sorted(set.intersection(*(set(s) for s in by_seed))))
    return lengths, np.array([[s[n] for n in lengths] for s in by_seed])


def find_runs(root: str) -> tuple[list[str], list[str], list[str]]:
  """(finished, failed, unfinished) run directories under `root`, sorted."""
  runs = {os.path.dirname(p) for p in glob.glob(os.path.join(root, '**', experiment.CONFIG), recursive=True)}
  failed = {os.path.dirname(p) for p in glob.glob(os.path.join(root, '**', experiment.FAILED), recursive=True)}
  finished = {d for d in runs if os.path.exists(os.path.join(d, experiment.SUMMARY))}
  return sorted(finished), sorted(failed - finished), sorted(runs - finished - failed)


class Broken(ValueError):
  """A run directory whose files do not hold a finished run; the message says why."""


def load_run(run_dir: str) -> tuple[dict, dict, list[dict]]:
  """(flat config, summary, eval records) of a finished run; Broken if a file is unreadable
  or eval.jsonl misses a seed's length (a torn or cut file)."""
  try:
    config = experiment.flat_config(experiment.stored_config(run_dir))
    summary = io.read_json(os.path.join(run_dir, experiment.SUMMARY))
    records = io.read_jsonl(os.path.join(run_dir, experiment.EVAL))
    seeds = range(config['seed'], config['seed'] + config['num_seeds'])
    lengths = range(get_task(config['task.name']).min_length, config['eval.max_length'] + 1)
    chance = summary['chance_accuracy']
  except (io.Unreadable, experiment.RunFailed) as e:
    raise Broken(str(e).split('; it records')[0]) from None
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise Broken(f'config.json or summary.json lacks {one_line(e)}') from None
  if not isinstance(chance, float) or not experiment.complete(records, seeds, lengths):
    raise Broken('eval.jsonl is missing or incomplete; run the command of this run again to re-evaluate it')
  return config, summary, records


def group_runs(run_dirs: list[str]) -> tuple[list[Group], list[tuple[str, str]]]:
  """(groups of finished runs, sorted by task, encoding and the other fields; (directory,
  why) of each run skipped because its files are broken)."""
  loaded, skipped = {}, []
  for d in run_dirs:
    try:
      loaded[d] = load_run(d)
    except Broken as e:
      skipped.append((d, str(e)))
  fields = sorted({f for c, _, _ in loaded.values() for f in c} - set(_NOT_GROUPED))
  varying = [f for f in fields if len({repr(c.get(f)) for c, _, _ in loaded.values()}) > 1]
  groups = {}
  for d, (config, summary, records) in loaded.items():
    others = tuple((f, config.get(f)) for f in varying)
    key = (config['task.name'], config['encoding.name'], *(_order(v) for _, v in others))
    if key not in groups:
      groups[key] = Group(config['task.name'], config['encoding.name'], others, config['train.max_length'],
                          summary['chance_accuracy'], bool(summary.get('position_blind')))
    for record in records:
      if 'diverged' in record:
        groups[key].diverged += 1
      else:
        groups[key].records[record['seed']].append(record)
  return [groups[key] for key in sorted(groups) if groups[key].records], skipped


def _order(value) -> tuple:
  """A sort key for field values of any type: numbers by value, before the rest by text."""
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  return (0, value, '') if number else (1, 0, str(value))


def write_csv(rows: list[dict], path: str) -> None:
  """`rows` as CSV with a header, written atomically."""
  text = io_lib.StringIO()
  columns = list(dict.fromkeys(k for row in rows for k in row)) or list(_ROW_COLUMNS)
  writer = csv.DictWriter(text, columns, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  io.write_text_atomic(path, text.getvalue())


def _percent(mean: float | None, std: float | None = None) -> str:
  if mean is None or math.isnan(mean):
    return 'n/a'
  return f'{100 * mean:.1f}' if std is None else f'{100 * mean:.1f} ± {100 * std:.1f}'


def flags(row: dict) -> list[str]:
  """The row's flags: 'underfit', 'position-blind' (see the module docstring) and how many
  seeds diverged (left out of the scores)."""
  diverged = row.get('diverged_seeds', 0)
  return [name for name, flagged in (('underfit', row['underfit']), ('position-blind', row['position_blind']),
                                     (f'{diverged} seed{"s" * (diverged > 1)} diverged', diverged)) if flagged]


def markdown_table(rows: list[dict]) -> str:
  """The results as a Markdown table, accuracies in percent (mean ± std over seeds), with
  chance, the position-blind ceiling (in distribution / unseen) and the flags."""
  others = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in _ROW_COLUMNS]
  header = ['task', 'encoding', *others, 'seeds', 'in-distribution', 'unseen lengths', 'unseen (max)', 'chance',
            'ceiling', 'flags']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for r in rows:
    ceiling = '-' if r['ceiling_unseen'] is None else (
        f"{_percent(r['ceiling_in_distribution'])} / {_percent(r['ceiling_unseen'])}")
    cells = [r['task'], r['encoding'], *(str(r.get(k)) for k in others), str(r['seeds']),
             _percent(r['in_distribution_mean'], r['in_distribution_std']),
             _percent(r['unseen_mean'], r['unseen_std']), _percent(r['unseen_max']), _percent(r['chance']),
             ceiling, ', '.join(flags(r))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def legend(rows: list[dict], underfit_threshold: float) -> list[str]:
  """What the table's chance, ceiling and flags mean, for the flags that occur in `rows`."""
  lines = ['chance: the best input-blind guess.']
  if any(r['position_blind'] for r in rows):
    lines.append('ceiling, position-blind: the model has bidirectional attention and no positions, so every '
                 'answer slot gets the same output; no such model can beat the ceiling (in distribution / '
                 "unseen: each example's most frequent answer token), so its score is a ceiling, not a baseline.")
  if any(r['underfit'] for r in rows):
    lines.append(f'underfit: in-distribution accuracy below {100 * underfit_threshold:.0f}%: the model did not '
                 'learn the task on its training lengths, so its unseen-lengths score does not measure '
                 'extrapolation (train longer).')
  return lines


def plot_lengths(groups: list[Group], rows: list[dict], path: str) -> None:
  """Accuracy vs. input length for one task's groups (and their `rows`): mean over seeds,
  band min to max; underfit groups dashed and faded; chance dashed, a position-blind
  ceiling dotted."""
  fig = Figure(figsize=(10, 4.5), layout='constrained')
  ax = fig.subplots()
  if len(groups) > 10:  # More curves than the default cycle's 10 colours: no two alike.
    ax.set_prop_cycle(color=[colormaps['tab20'](i % 20) for i in range(len(groups))])
  first_length = math.inf
  for group, row in zip(groups, rows):
    lengths, accuracy = group.curve()
    first_length = min(first_length, lengths[0])
    faded = dict(linestyle='--', alpha=0.5) if row['underfit'] else {}
    label = f'{group.label} ({", ".join(flags(row))})' if flags(row) else group.label
    (line,) = ax.plot(lengths, accuracy.mean(0), label=label, **faded)
    ax.fill_between(lengths, accuracy.min(0), accuracy.max(0), color=line.get_color(), alpha=0.2 * faded.get('alpha', 1),
                    linewidth=0)
  for i, train_max in enumerate(sorted({g.train_max_length for g in groups})):
    ax.axvspan(first_length - 0.5, train_max + 0.5, color='grey', alpha=0.15, linewidth=0,
               label=None if i else 'training lengths')
  ax.axhline(groups[0].chance, color='black', linestyle='--', linewidth=1, label='chance')
  blind = next((g for g in groups if g.position_blind), None)
  if blind is not None:
    lengths, ceiling = blind.curve('position_blind_ceiling')
    ax.plot(lengths, ceiling[0], color='black', linestyle=':', linewidth=1.5, label='position-blind ceiling')
  ax.set(title=groups[0].task, xlabel='input length', ylabel='token accuracy', ylim=(0, 1.02))
  fig.legend(fontsize='small', loc='outside right upper', frameon=False)  # Beside the axes, off the curves.
  _save(fig, path)


def plot_heatmap(rows: list[dict], labels: list[str], path: str) -> None:
  """Mean unseen-lengths accuracy, tasks x groups (columns: group labels), coloured by the
  accuracy above chance, (accuracy - chance) / (1 - chance): white at chance, blue above,
  red below. Underfit cells are hatched and marked †, position-blind ones ‡."""
  tasks = sorted({r['task'] for r in rows})
  columns = list(dict.fromkeys(labels))
  accuracy, above_chance = np.full((2, len(tasks), len(columns)), np.nan)
  marks = {}
  for row, label in zip(rows, labels):
    i, j = tasks.index(row['task']), columns.index(label)
    accuracy[i, j] = row['unseen_mean']
    above_chance[i, j] = (row['unseen_mean'] - row['chance']) / (1 - row['chance'])
    marks[i, j] = '†' * row['underfit'] + '‡' * row['position_blind']
  fig = Figure(figsize=(1.2 * len(columns) + 3, 0.5 * len(tasks) + 2.4), layout='constrained')
  ax = fig.subplots()
  image = ax.imshow(above_chance, norm=TwoSlopeNorm(vcenter=0, vmin=-1, vmax=1), cmap='RdBu', aspect='auto')
  for (i, j), value in np.ndenumerate(accuracy):
    if np.isnan(value):
      continue
    ax.text(j, i, f'{100 * value:.0f}{marks[i, j]}', ha='center', va='center',
            color='white' if abs(above_chance[i, j]) > 0.6 else 'black')
    if '†' in marks[i, j]:
      ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch='//', edgecolor='grey', linewidth=0))
  ax.set_xticks(range(len(columns)), columns, rotation=30, ha='right')
  ax.set_yticks(range(len(tasks)), tasks)
  ax.set_title('accuracy on unseen lengths (%, mean over seeds)\n† underfit (hatched)   ‡ position-blind ceiling',
               fontsize='medium')
  fig.colorbar(image, ax=ax, label='above chance:\n(acc - chance) / (1 - chance)')
  _save(fig, path)


def _save(fig: Figure, path: str) -> None:
  """Writes `fig` as a PNG, atomically (a temporary file renamed over `path`)."""
  fig.savefig(f'{path}.tmp', format='png', dpi=120)
  os.replace(f'{path}.tmp', path)


def write_tensorboard(root: str, run_dirs: list[str]) -> str:
  """Training curves of every run and seed as TensorBoard scalars under root/tensorboard
  (rewritten from train.jsonl each time); returns that directory."""
  try:
    from tensorboardX import SummaryWriter  # Optional dependency, imported only here.
  except ImportError as e:
    raise SystemExit("--tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from e
  logdir = os.path.join(root, 'tensorboard')
  shutil.rmtree(logdir, ignore_errors=True)
  for run_dir in run_dirs:
    by_seed = collections.defaultdict(list)
    for record in io.read_jsonl(os.path.join(run_dir, 'train.jsonl')):
      by_seed[record['seed']].append(record)
    for seed, records in by_seed.items():
      with SummaryWriter(os.path.join(logdir, os.path.relpath(run_dir, root), f'seed={seed}')) as writer:
        for record in records:
          for name in ('loss', 'token_accuracy', 'sequence_accuracy', 'steps_per_s'):
            writer.add_scalar(f'train/{name}', record[name], record['step'])
  return logdir


def _failure(run_dir: str) -> str:
  """The error failed.json records (or why it cannot be read)."""
  try:
    return io.read_json(os.path.join(run_dir, experiment.FAILED))['error']
  except (io.Unreadable, KeyError, TypeError) as e:
    return f'failed.json cannot be read ({one_line(e)})'


def write(root: str, tensorboard: bool = False, underfit_threshold: float = UNDERFIT_THRESHOLD) -> str:
  """Writes results.csv, results.md and the plots for the runs under `root`; returns what
  to print: the table with its legend, the plots' paths and the runs that failed or are
  unfinished."""
  finished, failed, unfinished = find_runs(root)
  groups, skipped = group_runs(finished)
  rows = [g.row(underfit_threshold) for g in groups]
  table = '\n'.join([markdown_table(rows), '', *legend(rows, underfit_threshold)]) if rows else 'no finished runs'
  plots = []
  if groups:
    os.makedirs(os.path.join(root, 'plots'), exist_ok=True)
    for task in sorted({g.task for g in groups}):
      plots.append(os.path.join(root, 'plots', f'accuracy_vs_length_{task}.png'))
      plot_lengths(*zip(*[(g, r) for g, r in zip(groups, rows) if g.task == task]), plots[-1])
    plots.append(os.path.join(root, 'plots', 'heatmap.png'))
    plot_heatmap(rows, [g.label for g in groups], plots[-1])
  problems = [f'- failed: {os.path.relpath(d, root)}: {_failure(d)}' for d in failed]
  problems += [f'- unfinished: {os.path.relpath(d, root)}' for d in unfinished]
  problems += [f'- skipped (broken): {os.path.relpath(d, root)}: {why}' for d, why in skipped]
  for d, why in skipped:
    logging.warning('report: skipped %s: %s', d, why)
  write_csv(rows, os.path.join(root, 'results.csv'))
  markdown = [f'# Results: {os.path.basename(os.path.abspath(root))}', '', table, '']
  markdown += [f'![{os.path.basename(p)}]({os.path.relpath(p, root)})' for p in plots]
  markdown += ['', '## Failed or unfinished runs', '', *problems] if problems else []
  io.write_text_atomic(os.path.join(root, 'results.md'), '\n'.join(markdown) + '\n')
  lines = [table, '', *problems, *(f'plot: {p}' for p in plots), f'table: {os.path.join(root, "results.md")}']
  if tensorboard:
    lines.append(f'tensorboard: {write_tensorboard(root, finished + failed + unfinished)}')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('root', help='directory of runs, e.g. a sweep workdir')
  parser.add_argument('--tensorboard', action='store_true', help='also write TensorBoard training curves')
  parser.add_argument('--underfit_threshold', type=float, default=UNDERFIT_THRESHOLD,
                      help='flag groups whose mean in-distribution accuracy is below this (default %(default)s)')
  args = parser.parse_args(argv)
  if not os.path.isdir(args.root):
    parser.exit(2, f'usage error: {args.root} is {"a file" if os.path.exists(args.root) else "missing"}; allowed: '
                   'a directory of runs, e.g. a sweep workdir\n')
  if not 0 <= args.underfit_threshold <= 1:
    parser.exit(2, f'usage error: --underfit_threshold={args.underfit_threshold} must be in [0, 1]\n')
  print(write(args.root, args.tensorboard, args.underfit_threshold))


if __name__ == '__main__':
  main()
