"""The comparison tables of docs/results.md, from the runs of the shipped reproduction sweeps.

    python scripts/results_tables.py ruoss2023 runs/ruoss2023
    python scripts/results_tables.py deletang2023 runs/deletang2023
    python scripts/results_tables.py kazemnejad2023 runs/kazemnejad2023
    python scripts/results_tables.py paper_scale runs/paper_scale

Each prints Markdown: our numbers (from eval.jsonl, through `pe_research.report`) beside the
published ones where the paper gives them, with the report's flags (underfit, position-blind).
Scores are token accuracies in percent, mean over unseen lengths; "max" is the best seed, as
Deletang et al. and Ruoss et al. report; Kazemnejad et al. score exact match (every answer
token right), our sequence accuracy.
"""

import sys

import numpy as np

from pe_research import evaluation, report

# Deletang et al. 2023, Table 2, Transformer column (best positional encoding, best of their
# seeds and learning rates, mean accuracy over lengths 41..500), as the issue that asked for
# this reproduction quotes them; the other tasks' values were not available to us.
DELETANG_TRANSFORMER = {
    'reverse_string': 62.3, 'duplicate_string': 52.8, 'odds_first': 52.8, 'stack_manipulation': 57.5,
    'parity_check': 52.0, 'modular_arithmetic': 24.2, 'cycle_navigation': 61.9,
}
# Ruoss et al. 2023's abstract: randomized positions raise test accuracy by 12.0% on average.
RUOSS_AVERAGE_GAIN = 12.0
# Kazemnejad et al. 2023, Figure 1: mean reciprocal rank over their 10 tasks (exact match).
KAZEMNEJAD_MRR = {'none': 0.69, 't5_bias': 0.55, 'alibi': 0.50, 'rope': 0.33, 'sinusoidal': 0.22}
# A task counts as solved beyond the training lengths at this mean unseen accuracy (best seed).
SOLVED = 0.9


def rows(root: str) -> list[dict]:
  """The report's rows (seeds merged) of the runs under `root`, with each group's seeds'
  exact-match (sequence) accuracy over unseen lengths added."""
  finished, _, _ = report.find_runs(root)
  groups, skipped = report.group_runs(finished)
  if skipped:
    print(f'(skipped {len(skipped)} broken run(s): {", ".join(d for d, _ in skipped)})', file=sys.stderr)
  result = []
  for group in groups:
    row = group.row()
    row['exact_unseen_mean'] = float(np.mean([
        evaluation.summarize(records, group.train_max_length, 'sequence_accuracy')['unseen_lengths_accuracy']
        for records in group.records.values()]))
    result.append(row)
  return result


def pct(value) -> str:
  return '-' if value is None else f'{100 * value:.1f}'


def marked(row: dict, key: str) -> str:
  """The score in percent, † if the group is underfit, ‡ if position-blind."""
  return pct(row[key]) + '†' * row['underfit'] + '‡' * row['position_blind']


def ruoss(root: str) -> str:
  """Contiguous against randomized positions per task and encoding, and the average gain;
  a cell not run shows '-' and its pair counts in no average."""
  by = {(r['task'], r['encoding'], r['encoding.positions.sampler']): r for r in rows(root)}
  tasks = list(dict.fromkeys(t for t, _, _ in by))
  encodings = list(dict.fromkeys(e for _, e, _ in by))
  lines = ['| task | encoding | chance | contiguous: in-dist. | unseen (max) | randomized: in-dist. | unseen (max) | '
           'gain (max) |', '|---|---|---|---|---|---|---|---|']
  gains, fitted = [], []
  for task in tasks:
    for name in encodings:
      c, r = by.get((task, name, 'contiguous')), by.get((task, name, 'randomized'))
      if c is None and r is None:
        continue
      gain = None if c is None or r is None else r['unseen_max'] - c['unseen_max']
      if gain is None:
        shown = '-'
      elif name == 'none':  # The control reads no positions: its gain is noise, not counted.
        shown = f'({100 * gain:+.1f}, control)'
      else:
        shown = f'{100 * gain:+.1f}'
        gains.append(gain)
        if not (c['underfit'] or r['underfit']):
          fitted.append(gain)
      sides = [(marked(x, 'in_distribution_mean'), pct(x['unseen_max'])) if x else ('-', '-') for x in (c, r)]
      lines.append(f"| {task} | {name} | {pct((c or r)['chance'])} | {' | '.join(sides[0])} | "
                   f"{' | '.join(sides[1])} | {shown} |")
  average = lambda values: f'{100 * np.mean(values):+.1f} points' if values else 'nothing'
  lines += ['', f'Average gain of randomized over contiguous positions (unseen lengths, best seed): '
                f'{average(gains)} over {len(gains)} task x encoding pairs; '
                f'{average(fitted)} over the {len(fitted)} pairs where neither cell is underfit '
                f'(Ruoss et al.: {RUOSS_AVERAGE_GAIN:+.1f}). -: not run. † underfit (in-distribution below 95%); ‡ '
                f'position-blind: its best is the ceiling of a model that cannot tell its answer slots apart.']
  return '\n'.join(lines)


def deletang(root: str) -> str:
  by_task = {}
  for r in rows(root):
    by_task.setdefault(r['task'], []).append(r)
  lines = ['| task | best encoding | unseen, best seed | its in-dist. | chance | Deletang et al. Transformer | '
           'beyond training |', '|---|---|---|---|---|---|---|']
  for task, group in by_task.items():
    learned = [r for r in group if not r['underfit']]
    best = max(learned or group, key=lambda r: r['unseen_max'])
    verdict = ('solved' if best['unseen_max'] >= SOLVED else
               'near chance' if best['unseen_max'] - best['chance'] < 0.05 else 'partly')
    if not learned:
      verdict = 'not learned in distribution'
    published = DELETANG_TRANSFORMER.get(task)
    lines.append(f"| {task} | {best['encoding']} | {pct(best['unseen_max'])} | {marked(best, 'in_distribution_mean')} | "
                 f"{pct(best['chance'])} | {'-' if published is None else f'{published:.1f}'} | {verdict} |")
  lines += ['', f'Best encoding: the highest unseen-lengths accuracy of its best seed among the cells that '
                f'learned the task (in-distribution at least 95%), else among all. Solved: at least '
                f'{100 * SOLVED:.0f}%; near chance: within 5 points of it. † underfit, ‡ position-blind.']
  return '\n'.join(lines)


def kazemnejad(root: str) -> str:
  table = rows(root)
  tasks = list(dict.fromkeys(r['task'] for r in table))
  encodings = list(dict.fromkeys(r['encoding'] for r in table))
  score = {(r['task'], r['encoding']): r for r in table}
  lines = ['| task | ' + ' | '.join(encodings) + ' |', '|---|' + '---|' * len(encodings)]
  ranks = {e: [] for e in encodings}
  for task in tasks:
    cells = [score[task, e] for e in encodings]
    lines.append(f'| {task} | ' + ' | '.join(marked(c, 'exact_unseen_mean') for c in cells) + ' |')
    order = sorted(encodings, key=lambda e: -score[task, e]['exact_unseen_mean'])
    for e in encodings:
      ranks[e].append(1 / (1 + order.index(e)))
  lines += ['', '| encoding | mean reciprocal rank, ours | Kazemnejad et al. |', '|---|---|---|']
  for e in sorted(encodings, key=lambda e: -np.mean(ranks[e])):
    published = KAZEMNEJAD_MRR.get(e)
    lines.append(f"| {e} | {np.mean(ranks[e]):.2f} | {'-' if published is None else f'{published:.2f}'} |")
  lines += ['', 'Exact match (every answer token right) over unseen lengths, mean over seeds, %. † underfit '
                '(token accuracy in distribution below 95%). Ranks per task by that score (1 = best); the '
                "paper's MRR is over its 10 tasks (our 5 are copy, reverse, sort, addition, parity), with "
                'learned positions absent from it.']
  return '\n'.join(lines)


# paper_scale is the Ruoss et al. comparison at the published size: the same table.
TABLES = {'ruoss2023': ruoss, 'deletang2023': deletang, 'kazemnejad2023': kazemnejad, 'paper_scale': ruoss}

if __name__ == '__main__':
  if len(sys.argv) != 3 or sys.argv[1] not in TABLES:
    sys.exit(f'usage: python scripts/results_tables.py {{{",".join(TABLES)}}} RUNS_DIR')
  print(TABLES[sys.argv[1]](sys.argv[2]))
