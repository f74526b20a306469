"""The reproduction page's settings, tables and verdicts, computed from the shipped sweeps' runs.

    python scripts/results_tables.py ruoss2023 docs/results/ruoss2023/runs docs/results/ruoss2023_fitted/runs
    python scripts/results_tables.py deletang2023 docs/results/deletang2023/runs
    python scripts/results_tables.py kazemnejad2023 docs/results/kazemnejad2023/runs
    python scripts/results_tables.py paper_scale docs/results/paper_scale/runs
    python scripts/results_tables.py settings ruoss2023 docs/results/ruoss2023/runs
    python scripts/results_tables.py resampling docs/results/ruoss2023/runs
    python scripts/results_tables.py rules
    python scripts/results_tables.py --page docs/results.md    # rewrite the page's generated blocks
    python scripts/results_tables.py --check docs/results.md   # exit 1 if one is stale

Each table prints one Markdown block: our protocol beside the paper's (`PAPERS`), our numbers
(from eval.jsonl, through `pe_research.report`, with its flags: underfit, position-blind),
the findings, each with the verdict that `RULES` give it, and the compute the runs took.
Scores are token accuracies in percent, mean over unseen lengths; "max" is the best seed,
as Deletang et al. and Ruoss et al. report; Kazemnejad et al. score exact match (every
answer token right), our sequence accuracy.

docs/results.md holds these blocks between `<!-- results_tables: NAME ROOT... -->` and
`<!-- end results_tables -->` lines; `--page` rewrites each from the records it names and
`--check` says which are stale (tests/test_results_page.py runs it on the committed page).
"""

import dataclasses
import functools
import os
import re
import sys

import numpy as np

from pe_research import evaluation, report
from pe_research.tasks import get_task

# The margin of every rule below, in accuracy (5 points): a score this close to chance is at
# chance, one not this far above the position-blind ceiling shows no use of positions, and
# two scores this close agree. The seeds of one cell differ by more than this on some tasks
# (docs/results.md), so smaller differences are not read as findings.
MARGIN = 0.05
# A task counts as solved beyond the training lengths at this mean unseen accuracy (best
# seed), Deletang et al.'s threshold for a task a model generalizes on.
SOLVED = 0.9
REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_COMPARABLE = 'reproduced', 'partly', 'not reproduced', 'not comparable'

RULES = f"""Each finding gets one verdict, by these rules in order (margin: {100 * MARGIN:.0f} points of accuracy):
1. **not comparable** when an arm is underfit (in-distribution accuracy below 95%: it never
   learned its task, so its score beyond training measures no extrapolation); when the score
   is within the position-blind ceiling (at most the margin above what a model that cannot
   tell its answer slots apart reaches on the same examples: no evidence that positions are
   used); when both sides are at chance (within the margin of it); or when a size is
   compared across test ranges of another ratio to the training lengths than the paper's.
2. **reproduced** when ours goes the paper's way and, where the paper gives a number (and
   the test ranges have the same ratio), lies within the margin of it.
3. **partly** when ours goes the paper's way but not by its size (a gain below the margin,
   a number further than the margin from theirs, a rank one place off).
4. **not reproduced** otherwise.

Ranks are competition ranks: tied scores share a rank ("1224"). A task on which no encoding
is more than the margin above chance ranks nothing and is left out of the mean reciprocal
rank."""


@dataclasses.dataclass(frozen=True)
class Paper:
  """A paper's protocol, as its text (or, where silent, its code) states it; `None`: not
  stated in what we could read."""

  cite: str
  train_lengths: tuple[int, int]
  test_lengths: tuple[int, int]
  steps: str
  batch: str
  seeds: str
  learning_rate: str
  model: str
  tasks: str
  encodings: str
  metric: str
  positions: str = 'contiguous'
  # Where the lengths come from, when not the paper's text or code.
  lengths_note: str = ''


# What we could read of each paper (its abstract, its official code and its authors' words on
# the code's issue tracker; not the papers' full text): "not stated" where none of these says.
RUOSS = Paper(
    cite='Ruoss et al. 2023 (arXiv 2305.16843)', train_lengths=(1, 40), test_lengths=(41, 500),
    steps='not stated', batch='128 (their example script)', seeds='not stated', learning_rate='not stated (Adam)',
    model='5 layers, width 64, 8 heads (encoder; their code\'s defaults)', tasks='15 (Deletang et al.\'s)',
    encodings='none, sinusoidal, relative, RoPE, ALiBi, learned', metric='token accuracy, mean over unseen lengths',
    positions='contiguous, and randomized from [0, 2048) for every encoding but none',
    lengths_note=' (training: their example script; test: a secondary source, unverified)')
DELETANG = Paper(
    cite='Deletang et al. 2023 (arXiv 2207.02098)', train_lengths=(1, 40), test_lengths=(41, 500),
    steps='1,000,000', batch='128', seeds='10', learning_rate='1e-4, 3e-4, 5e-4 (Adam, constant)',
    model='5 layers, width 64, 8 heads (encoder)', tasks='15', encodings='none, sinusoidal, relative, RoPE, ALiBi',
    metric='token accuracy, mean over lengths 41..500, best of seeds, learning rates and encodings (unverified)')
# Kazemnejad et al. train on lengths 1..L and test on 1..2L, L = 20 for copy and reverse and 8
# for the others (their splits): the ratio is what compares.
KAZEMNEJAD = Paper(
    cite='Kazemnejad et al. 2023 (arXiv 2305.19466)', train_lengths=(1, 20), test_lengths=(1, 40),
    steps='40,000', batch='64', seeds='3', learning_rate='3e-5 (AdamW, polynomial decay, 6% warmup)',
    model='12 layers, width 768, 12 heads (decoder; about 107M parameters)', tasks='10',
    encodings='none, T5 bias, ALiBi, Rotary, sinusoidal',
    metric='exact match of generated answers over all test lengths; MRR over 51 rankings (split x seed), '
           'ties broken by order')

# Deletang et al. 2023, Table 2, Transformer column (best positional encoding, best of their
# seeds and learning rates, mean accuracy over lengths 41..500), as the issue that asked for
# this reproduction quotes them: unverified (we could not read the table), and the other
# tasks' values were not available to us.
DELETANG_TRANSFORMER = {
    'reverse_string': 62.3, 'duplicate_string': 52.8, 'odds_first': 52.8, 'stack_manipulation': 57.5,
    'parity_check': 52.0, 'modular_arithmetic': 24.2, 'cycle_navigation': 61.9,
}
# Ruoss et al. 2023's abstract: randomized positions raise test accuracy by 12.0% on average.
RUOSS_AVERAGE_GAIN = 12.0
# Kazemnejad et al. 2023, Figure 1: mean reciprocal rank over their 10 tasks (exact match);
# the saved outputs of their notebooks/plot_aggregate_final.ipynb give the same values.
KAZEMNEJAD_MRR = {'none': 0.69, 't5_bias': 0.55, 'alibi': 0.50, 'rope': 0.33, 'sinusoidal': 0.22}


@dataclasses.dataclass(frozen=True)
class Finding:
  claim: str
  ours: str
  theirs: str
  verdict: str
  why: str = ''


def not_comparable(arms: list[dict], score: float | None = None, theirs: float | None = None) -> str:
  """Why rule 1 makes a comparison of `arms` (rows; `score`: the score it rests on, default
  the best arm's unseen max; `theirs`: the paper's number, in [0, 1]) not comparable, or ''."""
  label = lambda a: f"{a['encoding']} {a['encoding.positions.sampler']}" if len(arms) > 1 else a['encoding']
  underfit = [label(a) for a in arms if a['underfit']]
  if underfit:
    return f"underfit: {', '.join(underfit)}"
  score = max(a['unseen_max'] for a in arms) if score is None else score
  ceiling = max(a['ceiling_unseen_any'] for a in arms)
  if score < ceiling + MARGIN:
    return f'within the position-blind ceiling ({pct(ceiling)})'
  chance = arms[0]['chance']
  ours_at_chance = all(a['unseen_max'] < a['chance'] + MARGIN for a in arms) if theirs is None else (
      score < chance + MARGIN)
  if ours_at_chance and (theirs is None or theirs < chance + MARGIN):
    return 'both at chance'
  return ''


def rows(*roots: str) -> list[dict]:
  """The report's rows (seeds merged) of the runs under `roots`, each with its runs'
  `wall_time_s` (summed over seeds' runs), the exact-match (sequence) accuracy over unseen
  lengths (mean over seeds), its chance (the token chance to the power of the answer length,
  mean over those lengths) and the position-blind ceiling over unseen lengths of its
  evaluated examples (`ceiling_unseen_any`, the highest over seeds)."""
  finished = [d for root in roots for d in report.find_runs(root)[0]]
  groups, skipped = report.group_runs(finished)
  if skipped:
    print(f'(skipped {len(skipped)} broken run(s): {", ".join(d for d, _ in skipped)})', file=sys.stderr)
  result = []
  for group in groups:
    row = group.row()
    per_seed = list(group.records.values())
    row['exact_unseen_mean'] = float(np.mean([
        evaluation.summarize(r, group.train_max_length, 'sequence_accuracy')['unseen_lengths_accuracy']
        for r in per_seed]))
    row['ceiling_unseen_any'] = float(max(
        evaluation.summarize(r, group.train_max_length, 'position_blind_ceiling')['unseen_lengths_accuracy']
        for r in per_seed))
    task = get_task(group.task)
    unseen = sorted({r['length'] for r in per_seed[0] if r['length'] > group.train_max_length})
    row['exact_chance'] = float(np.mean([group.chance ** int(task.output_length(n)) for n in unseen]))
    result.append(row)
  return result


def pct(value) -> str:
  return '-' if value is None else f'{100 * value:.1f}'


def marked(row: dict, key: str) -> str:
  """The score in percent, † if the group is underfit, ‡ if position-blind."""
  return pct(row[key]) + '†' * row['underfit'] + '‡' * row['position_blind']


def competition_ranks(scores: dict[str, float]) -> dict[str, int]:
  """{name: rank}, 1 = highest score; tied scores share the best of their ranks ("1224")."""
  return {name: 1 + sum(other > score for other in scores.values()) for name, score in scores.items()}


def findings_table(findings: list[Finding]) -> list[str]:
  lines = ['| finding | ours | theirs | verdict | why |', '|---|---|---|---|---|']
  lines += [f'| {f.claim} | {f.ours} | {f.theirs} | **{f.verdict}** | {f.why} |' for f in findings]
  counts = {v: sum(f.verdict == v for f in findings) for v in (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_COMPARABLE)}
  return lines + ['', 'Verdicts: ' + ', '.join(f'{n} {v}' for v, n in counts.items()) + '.']


def parameters(config: dict) -> int:
  """The number of parameters of the model that a flat config describes."""
  task = get_task(config['task.name'])
  # The model sees of its task only these (model/build.py, training/train_step.py).
  shape = (task.input_vocab_size, task.output_vocab_size, int(task.output_length(config['train.max_length'])))
  return _parameters(tuple(sorted((k, v) for k, v in config.items() if k != 'task.name')), shape, config['task.name'])


@functools.cache
def _parameters(config_items: tuple, task_shape: tuple, task_name: str) -> int:
  """`parameters` of a config (less its task) and its task's shape; `task_name` (a task of
  that shape) is left out of the cache's key."""
  import flax.nnx as nnx  # noqa: PLC0415  (JAX only where a settings table is built)
  import jax  # noqa: PLC0415
  import ml_collections  # noqa: PLC0415

  from pe_research import experiment  # noqa: PLC0415
  from pe_research.training.train_step import model_from_config  # noqa: PLC0415

  nested = {}
  for field, value in [*config_items, ('task.name', task_name)]:
    *path, leaf = field.split('.')
    node = nested
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  config = ml_collections.ConfigDict(experiment.current_fields(nested, experiment.config_json(_default_config())))
  model = nnx.eval_shape(lambda: model_from_config(config, get_task(task_name), nnx.Rngs(0)))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@functools.cache
def _defaults() -> dict:
  """The default config's fields, flat."""
  from pe_research import experiment  # noqa: PLC0415

  return experiment.flat_config(experiment.config_json(_default_config()))


@functools.cache
def _default_config():
  from pe_research import cli  # noqa: PLC0415

  return cli.load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'configs',
                                           'default.py'))


def settings(paper: Paper, configs: list[dict], metric: str) -> list[str]:
  """Our protocol (from the runs' configs) beside `paper`'s, as a Markdown table."""
  one = lambda field, fmt=str: ', '.join(fmt(v) for v in sorted({c[field] for c in configs}, key=report._order))
  train_max = max(c['train.max_length'] for c in configs)
  test_max = max(c['eval.max_length'] for c in configs)
  sizes = sorted({parameters(c) for c in configs})
  model = f"{one('model.num_layers')} layers, width {one('model.model_dim')}, {one('model.num_heads')} heads " + (
      '(decoder)' if all(c['model.causal'] for c in configs) else '(encoder)')
  size = f'{sizes[0]:,}' if len(sizes) == 1 else f'{sizes[0]:,} to {sizes[-1]:,}'
  tasks = sorted({c['task.name'] for c in configs})
  encodings = sorted({c['encoding.name'] for c in configs})
  samplers = sorted({c.get('encoding.positions.sampler', 'contiguous') for c in configs})
  their_ratio = paper.test_lengths[1] / paper.train_lengths[1]
  table = [
      ('training lengths', f"{one('train.min_length')}..{train_max}", '{}..{}'.format(*paper.train_lengths)),
      ('test lengths (unseen)', f'{train_max + 1}..{test_max}',
       '{}..{}'.format(*paper.test_lengths) + paper.lengths_note),
      ('longest test / longest training', f'{test_max / train_max:.1f}x', f'{their_ratio:.1f}x'),
      ('steps', one('train.steps', lambda v: f'{v:,}'), paper.steps),
      ('batch', one('train.batch_size'), paper.batch),
      ('seeds', one('num_seeds'), paper.seeds),
      ('learning rate', f"{one('train.learning_rate', lambda v: f'{v:g}')} (Adam, {one('train.schedule')})",
       paper.learning_rate),
      ('model', f'{model}; {size} parameters', paper.model),
      ('tasks', f"{len(tasks)}: {', '.join(tasks)}", paper.tasks),
      ('encodings', ', '.join(encodings), paper.encodings),
      ('positions', ', and '.join(samplers) + (f" from [0, {one('encoding.positions.max_length')})"
                                               if 'randomized' in samplers else ''), paper.positions),
      ('metric', metric, paper.metric),
  ]
  lines = [f'| setting | ours | {paper.cite} |', '|---|---|---|']
  return lines + [f'| {name} | {ours} | {theirs} |' for name, ours, theirs in table]


def cost(table: list[dict]) -> str:
  """The compute the runs took, from their summaries' wall times."""
  times = [t for r in table for t in r['wall_times']]
  if not times:
    return 'Compute: no wall times recorded.'
  return (f'Compute: {len(times)} cell{"s" * (len(times) > 1)}, a median of {np.median(times):.0f} s a cell, '
          f'{sum(times) / 3600:.1f} hours in all (the cells\' recorded wall times).')


def _ratio_differs(paper: Paper, configs: list[dict]) -> bool:
  ours = max(c['eval.max_length'] for c in configs) / max(c['train.max_length'] for c in configs)
  return abs(ours - paper.test_lengths[1] / paper.train_lengths[1]) > 0.5


def ruoss(*roots: str) -> str:
  """Contiguous against randomized positions per task and encoding, per training budget; the
  findings: each pair's gain (at the largest budget it ran) and the average gain."""
  loaded = load(*roots)
  table = [r for r in loaded.rows if r['encoding.positions.resample_at_eval']]
  budgets = sorted({r['train.steps'] for r in table})
  by = {(r['task'], r['encoding'], r['encoding.positions.sampler'], r['train.steps']): r for r in table}
  tasks = list(dict.fromkeys(t for t, _, _, _ in by))
  encodings = list(dict.fromkeys(e for _, e, _, _ in by))
  lines = ['| task | encoding | steps | chance | contiguous: in-dist. | unseen (max) | randomized: in-dist. | '
            'unseen (max) | gain (max) |', '|---|---|---|---|---|---|---|---|---|']
  pairs = {}
  for task in tasks:
    for name in encodings:
      for steps in budgets:
        c, r = by.get((task, name, 'contiguous', steps)), by.get((task, name, 'randomized', steps))
        if c is None and r is None:
          continue
        gain = None if c is None or r is None else r['unseen_max'] - c['unseen_max']
        shown = '-' if gain is None else f'{100 * gain:+.1f}' + (' (control)' if name == 'none' else '')
        if gain is not None and name != 'none':  # The control reads no positions: no finding.
          pairs[task, name] = (c, r, steps)  # Budgets ascend: the largest that ran both arms wins.
        sides = [(marked(x, 'in_distribution_mean'), pct(x['unseen_max'])) if x else ('-', '-') for x in (c, r)]
        lines.append(f"| {task} | {name} | {steps:,} | {pct((c or r)['chance'])} | {' | '.join(sides[0])} | "
                     f"{' | '.join(sides[1])} | {shown} |")
  lines += ['', '-: not run. † underfit (in-distribution below 95%); ‡ position-blind: its best is the ceiling '
                'of a model that cannot tell its answer slots apart.', '']
  findings, comparable = [], []
  for (task, name), (c, r, steps) in pairs.items():
    gain = r['unseen_max'] - c['unseen_max']
    why = not_comparable([c, r])
    verdict = NOT_COMPARABLE if why else (REPRODUCED if gain >= MARGIN else PARTLY if gain > 0 else NOT_REPRODUCED)
    if not why:
      comparable.append(gain)
    findings.append(Finding(f'randomized positions raise {name} on {task} ({steps:,} steps)',
                            f'{pct(c["unseen_max"])} to {pct(r["unseen_max"])} ({100 * gain:+.1f})', 'a gain', verdict,
                            why))
  findings += average_gain(comparable, len(pairs), _ratio_differs(RUOSS, loaded.configs))
  return '\n'.join(lines + findings_table(findings) + ['', cost(table)])


def average_gain(gains: list[float], num_pairs: int, ratio_differs: bool) -> list[Finding]:
  """The findings on the whole sweep: randomized positions help (most comparable pairs
  gain by the margin), and by the paper's average."""
  if not gains:
    why = f'none of the {num_pairs} pairs run has two fitted arms clear of the ceiling and chance'
    return [Finding('randomized positions help, across pairs', '-', 'yes', NOT_COMPARABLE, why),
            Finding('by this much on average', '-', f'{RUOSS_AVERAGE_GAIN:+.1f}', NOT_COMPARABLE, why)]
  mean, helped = float(np.mean(gains)), sum(g >= MARGIN for g in gains)
  direction = REPRODUCED if helped == len(gains) else PARTLY if helped > len(gains) / 2 else NOT_REPRODUCED
  over = f'{len(gains)} of {num_pairs} pairs comparable'
  size = (NOT_COMPARABLE if ratio_differs else REPRODUCED if abs(100 * mean - RUOSS_AVERAGE_GAIN) <= 100 * MARGIN
          else PARTLY if mean > 0 else NOT_REPRODUCED)
  return [Finding('randomized positions help, across pairs', f'{helped} of {len(gains)} comparable pairs gain '
                  f'{100 * MARGIN:.0f}+ points', 'yes', direction, over),
          Finding('by this much on average', f'{100 * mean:+.1f} (mean over the {len(gains)})',
                  f'{RUOSS_AVERAGE_GAIN:+.1f} (15 tasks)', size,
                  'test range of another ratio to training' if ratio_differs else over)]


def resampling(*roots: str) -> str:
  """Randomized cells evaluated again with `encoding.positions.resample_at_eval=False`
  (positions 0..n-1 at test) beside the same cells as trained."""
  loaded = load(*roots)
  again = [r for r in loaded.rows if not r['encoding.positions.resample_at_eval']]
  trained = {(r['task'], r['encoding']): r for r in loaded.rows
             if r['encoding.positions.sampler'] == 'randomized' and r['encoding.positions.resample_at_eval']}
  lines = ['| task | encoding | as trained: in-dist. | unseen (mean) | positions 0..n-1 at test: in-dist. | '
           'unseen (mean) |', '|---|---|---|---|---|---|']
  for r in again:
    t = trained.get((r['task'], r['encoding']))
    lines.append(f"| {r['task']} | {r['encoding']} | {pct(t and t['in_distribution_mean'])} | "
                 f"{pct(t and t['unseen_mean'])} | {pct(r['in_distribution_mean'])} | {pct(r['unseen_mean'])} |")
  return '\n'.join(lines + ['', 'Means over the seeds; the same checkpoints, evaluated twice.'])


def deletang(*roots: str) -> str:
  loaded = load(*roots)
  by_task = {}
  for r in loaded.rows:
    by_task.setdefault(r['task'], []).append(r)
  lines = ['| task | best encoding | unseen, best seed | its in-dist. | chance | position-blind ceiling | '
            'Deletang et al. Transformer |', '|---|---|---|---|---|---|---|']
  findings = []
  ratio_differs = _ratio_differs(DELETANG, loaded.configs)
  for task, group in by_task.items():
    learned = [r for r in group if not r['underfit']]
    best = max(learned or group, key=lambda r: r['unseen_max'])
    published = DELETANG_TRANSFORMER.get(task)
    lines.append(f"| {task} | {best['encoding']} | {pct(best['unseen_max'])} | {marked(best, 'in_distribution_mean')} "
                 f"| {pct(best['chance'])} | {pct(best['ceiling_unseen_any'])} | "
                 f"{'-' if published is None else f'{published:.1f}'} |")
    if published is None:
      continue
    theirs = published / 100
    why = not_comparable([best], theirs=theirs)
    ours_solved, theirs_solved = best['unseen_max'] >= SOLVED, theirs >= SOLVED
    if not why and ours_solved and not theirs_solved and ratio_differs:
      why = 'ours solved on a test range of another ratio'
    if why:
      verdict = NOT_COMPARABLE
    elif ours_solved != theirs_solved:
      verdict = NOT_REPRODUCED
    elif ratio_differs:  # Sizes are not compared across test ranges; the direction is.
      verdict, why = REPRODUCED, 'direction only: test range of another ratio'
    else:
      verdict = REPRODUCED if abs(best['unseen_max'] - theirs) <= MARGIN else PARTLY
    solved = lambda s: 'solved' if s else 'not solved'
    findings.append(Finding(f'{task}: {solved(theirs_solved)} beyond training', f"{pct(best['unseen_max'])} "
                            f"({best['encoding']})", f'{published:.1f}', verdict, why))
  lines += ['', 'Best encoding: the highest unseen-lengths accuracy of its best seed among the cells that learned '
                'the task (in-distribution at least 95%), else among all. The ceiling: the position-blind ceiling of '
                f'its evaluated examples, unseen lengths. Solved: at least {100 * SOLVED:.0f}%. † underfit, '
                '‡ position-blind.', '']
  unsolved = [t for t, g in by_task.items() if max(r['unseen_max'] for r in g) < SOLVED]
  lines.append(f'Tasks no cell solves beyond training: {len(unsolved)} of {len(by_task)}.')
  return '\n'.join(lines + [''] + findings_table(findings) + ['', cost(loaded.rows)])


def kazemnejad(*roots: str) -> str:
  loaded = load(*roots)
  tasks = list(dict.fromkeys(r['task'] for r in loaded.rows))
  encodings = list(dict.fromkeys(r['encoding'] for r in loaded.rows))
  score = {(r['task'], r['encoding']): r for r in loaded.rows}
  lines = ['| task | ' + ' | '.join(encodings) + ' | chance | ranked |', '|---|' + '---|' * (len(encodings) + 2)]
  ranked = []
  for task in tasks:
    cells = [score[task, e] for e in encodings]
    chance = max(c['exact_chance'] for c in cells)
    ranks = max(c['exact_unseen_mean'] for c in cells) > chance + MARGIN and not any(c['underfit'] for c in cells)
    ranked += [task] * ranks
    lines.append(f'| {task} | ' + ' | '.join(marked(c, 'exact_unseen_mean') for c in cells) +
                 f" | {pct(chance)} | {'yes' if ranks else 'no'} |")

  def mrr(names: list[str]) -> dict[str, float]:
    per_task = [competition_ranks({e: score[t, e]['exact_unseen_mean'] for e in names}) for t in ranked]
    return {e: float(np.mean([1 / r[e] for r in per_task])) if per_task else float('nan') for e in names}

  theirs_set = [e for e in encodings if e in KAZEMNEJAD_MRR]
  ours, with_all = mrr(theirs_set), mrr(encodings)
  our_rank, their_rank = competition_ranks(ours), competition_ranks(KAZEMNEJAD_MRR)
  lines += ['', f'Exact match over unseen lengths, mean over seeds, %; chance: the token chance to the power of the '
                f'answer length. Ranked tasks: {len(ranked)} of {len(tasks)}.', '',
            '| encoding | MRR, their encodings | rank | Kazemnejad et al. MRR | rank | MRR, all of ours |',
            '|---|---|---|---|---|---|']
  findings = []
  for e in sorted(encodings, key=lambda e: (-ours.get(e, -1), -with_all[e])):
    published = KAZEMNEJAD_MRR.get(e)
    if published is None:
      lines.append(f'| {e} | - | - | - | - | {with_all[e]:.2f} |')
      continue
    lines.append(f'| {e} | {ours[e]:.2f} | {our_rank[e]} | {published:.2f} | {their_rank[e]} | {with_all[e]:.2f} |')
    off = abs(our_rank[e] - their_rank[e])
    why = '' if ranked else 'no task ranks'
    verdict = NOT_COMPARABLE if why else REPRODUCED if off == 0 else PARTLY if off == 1 else NOT_REPRODUCED
    findings.append(Finding(f'{e} ranks {their_rank[e]} of {len(KAZEMNEJAD_MRR)}', f'rank {our_rank[e]} '
                            f'(MRR {ours[e]:.2f})', f'rank {their_rank[e]} (MRR {published:.2f})', verdict, why))
  lines += ['', 'MRR: mean reciprocal rank over the ranked tasks, competition ranks per task; "their encodings": '
                'ranked among the paper\'s encodings only (their MRR is over their 10 tasks); "all of ours": '
                'ranked among every encoding we ran.', '']
  return '\n'.join(lines + findings_table(findings) + ['', cost(loaded.rows)])


@dataclasses.dataclass
class Loaded:
  rows: list[dict]
  configs: list[dict]


def load(*roots: str) -> Loaded:
  """The rows of the runs under `roots` (with their wall times) and their flat configs."""
  if not roots:
    raise SystemExit('usage error: no runs directory given')
  for root in roots:
    if not os.path.isdir(root):
      raise SystemExit(f'usage error: {root} is {"a file" if os.path.exists(root) else "missing"}; allowed: a '
                       'directory of runs')
  table = rows(*roots)
  runs = [report.load_run(d) for root in roots for d in report.find_runs(root)[0]]
  if not runs:
    raise SystemExit(f'usage error: no finished runs under {", ".join(roots)}')
  for row in table:
    row['wall_times'] = [s['wall_time_s'] for c, s, _ in runs if _same_group(row, c) and 'wall_time_s' in s]
    for field in ('encoding.positions.sampler', 'encoding.positions.resample_at_eval', 'train.steps'):
      # A field that does not vary is no column of the report's; one a run predates has its default.
      row.setdefault(field, runs[0][0].get(field, _defaults()[field]))
  return Loaded(table, [c for c, _, _ in runs])


def _same_group(row: dict, config: dict) -> bool:
  fields = {'task': 'task.name', 'encoding': 'encoding.name'}
  return all(config.get(fields.get(k, k)) == v for k, v in row.items() if k in fields or '.' in k)


# The paper each sweep reproduces; paper_scale is the Ruoss et al. comparison at the
# published size.
PAPERS = {'ruoss2023': RUOSS, 'paper_scale': RUOSS, 'deletang2023': DELETANG, 'kazemnejad2023': KAZEMNEJAD}


def settings_table(sweep: str, *roots: str) -> str:
  """The settings of the sweep's runs under `roots` beside its paper's."""
  if sweep not in PAPERS:
    raise SystemExit(f'usage error: settings of {sweep!r}; allowed: {", ".join(PAPERS)}')
  metric = ('exact match over unseen lengths, mean over seeds; MRR over tasks, competition ranks'
            if sweep == 'kazemnejad2023' else 'token accuracy, mean over unseen lengths, best seed')
  return '\n'.join(settings(PAPERS[sweep], load(*roots).configs, metric))


TABLES = {'ruoss2023': ruoss, 'resampling': resampling, 'deletang2023': deletang, 'kazemnejad2023': kazemnejad,
          'paper_scale': ruoss, 'settings': settings_table, 'rules': lambda: RULES}
BLOCK = re.compile(r'^(<!-- results_tables: (.*?) -->\n)(.*?)^(<!-- end results_tables -->)$', re.S | re.M)


def page(text: str) -> str:
  """`text` (a Markdown page) with every generated block made anew from the records it names
  (paths, those with a '/', relative to the repository's root)."""
  root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)

  def block(match: re.Match) -> str:
    name, *args = match.group(2).split()
    if name not in TABLES:
      raise SystemExit(f'usage error: a block names the table {name!r}; allowed: {", ".join(TABLES)}')
    args = [os.path.normpath(os.path.join(root, a)) if '/' in a else a for a in args]
    return match.group(1) + TABLES[name](*args) + '\n' + match.group(4)

  return BLOCK.sub(block, text)


if __name__ == '__main__':
  args = sys.argv[1:]
  if len(args) == 2 and args[0] in ('--page', '--check'):
    with open(args[1]) as f:
      old = f.read()
    new = page(old)
    if args[0] == '--check':
      sys.exit(0 if new == old else f'{args[1]}: its generated blocks differ from the records; run --page')
    from pe_research import io  # noqa: PLC0415

    io.write_text_atomic(args[1], new)
  elif args and args[0] in TABLES:
    print(TABLES[args[0]](*args[1:]))
  else:
    sys.exit(f'usage: python scripts/results_tables.py {{{",".join(TABLES)}}} RUNS_DIR [RUNS_DIR ...] | '
             '--page PAGE | --check PAGE')
