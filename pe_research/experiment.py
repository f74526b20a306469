"""`run(config, workdir)`: validate, train, evaluate every length, write the results.

Writes to `workdir`:
  config.json   the full config;
  train.jsonl   per seed, every `steps_per_call` steps: loss, accuracies, steps/s, the real
                (unpadded) tokens per step and per second of that seed's model, and
                whether its loss and state were all finite;
  checkpoints/  the last two training states, every `train.checkpoint_every` steps and at
                the end (see `pe_research.checkpointing`);
  eval.jsonl    per seed and length: token and sequence accuracy, in or out of the
                training range, and the position-blind ceiling of the same examples
                (`training.metrics.position_blind_ceiling`); a seed that diverged has one
                {'seed', 'diverged'} line instead;
  summary.json  in-distribution accuracy, mean accuracy over unseen lengths (null when no
                length is unseen), chance, whether the model is position-blind and then its
                ceiling, how evaluation placed positions, the seeds that diverged, the step,
                compilations and wall time (also printed);
  failed.json   only after a failure: the error, e.g. a non-finite loss naming its step;
  .lock         held while a process works here (`pe_research.locking`).

Interrupted runs resume: run the same config on the same workdir again and training goes on
from the latest checkpoint, ending bit-identical to a run that never stopped (train.jsonl
is first cut back to the checkpoint's step; eval.jsonl and summary.json are written once,
at the end). A finished run (readable summary, complete eval.jsonl) is not run again; one
whose train.steps is raised trains on; damaged result files are rebuilt (`run`). Every file
is written atomically or by whole-line appends (`pe_research.io`), so a crash never leaves
one unreadable.
"""

import collections
import functools
import json
import math
import os
import time
import traceback
from typing import NamedTuple

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pe_research import checkpointing, evaluation, io, locking
from pe_research.cli import OneLineError
from pe_research.positions import RANDOM_SAMPLERS, evaluates_unseen_positions, make_sampler
from pe_research.tasks import get_task
from pe_research.tasks.base import Task
from pe_research.training.sharding import fetch, over_seeds, place, seeds_vectorized, state_sharding
from pe_research.training.train_step import all_finite, make_train_chunk, training_from_config
from pe_research.validation import validate

CONFIG, EVAL, SUMMARY, FAILED = 'config.json', 'eval.jsonl', 'summary.json', 'failed.json'
# Fields that do not change a run's results: a run may resume under other values of them.
WORKFLOW_FIELDS = ('train.checkpoint_every',)
# Fields (and sections) that only evaluation reads: `pe_research.evaluate` evaluates a
# trained run under other values of them.
EVALUATION_FIELDS = ('eval', 'encoding.positions.resample_at_eval')


class RunFailed(OneLineError, RuntimeError):
  """A run stopped for the reason its message gives (a non-finite loss, a workdir that
  holds another config); command-line tools print it without a traceback."""

  prefix = 'run failed'


def _counted(fn, counter: collections.Counter, name: str):
  """`fn` that counts its traces: under `jax.jit` every trace is one compilation."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    counter[name] += 1
    return fn(*args, **kwargs)

  return wrapped


def seed_keys(config):
  """(init_keys, data_keys), one per seed, each [num_seeds] typed keys."""
  seeds = jnp.arange(config.seed, config.seed + config.num_seeds)
  keys = jax.vmap(lambda s: jax.random.split(jax.random.key(s)))(seeds)
  return keys[:, 0], keys[:, 1]


class Trained(NamedTuple):
  """What `train` gives: the parameters (a leading seed axis), the shape-only model, the
  step they reached and {seed: why} for seeds that diverged (their parameters are not
  finite; `evaluate` leaves them out)."""

  params: nnx.State
  abstract: nnx.Module
  step: int
  diverged: dict[int, str]


def _diverged_seeds(records: list[dict]) -> dict[int, str]:
  """{seed: why} of the seeds whose train.jsonl records say they stopped being finite."""
  diverged = {}
  for r in records:
    if r['seed'] not in diverged and not r.get('finite', r.get('loss') is not None):
      diverged[r['seed']] = f"non-finite loss or parameters by step {r['step']}"
  return diverged


def _restore(config, task: Task, workdir: str, checkpoints: checkpointing.Checkpoints):
  """(training, state, data_keys) of the latest readable checkpoint in `workdir`, or fresh
  ones at step 0, placed on the devices."""
  training = training_from_config(config, task)
  init_keys, data_keys = seed_keys(config)
  state = jax.jit(jax.vmap(training.init))(init_keys)
  # With several devices, the state is placed on them (no-op on one device) before the
  # checkpoint is read into it: with several processes each then reads only its own part.
  state, data_keys = place((state, data_keys), state_sharding(config))
  state, data_keys = checkpoints.restore(state, data_keys)
  return training, state, data_keys


def train(config, task: Task, workdir: str, compilations: collections.Counter, progress=None) -> Trained:
  """Trains `num_seeds` models together, from the latest checkpoint in `workdir` if any.
  `progress(step)`, if given, is called at the start and after every compiled call.

  A seed whose loss, parameters or optimizer state stop being finite is recorded as
  diverged and the others train on; when every seed has diverged the run fails with the
  first bad step, and the checkpoint before it stays the last one."""
  seeds = list(range(config.seed, config.seed + config.num_seeds))
  path = os.path.join(workdir, 'train.jsonl')
  with checkpointing.Checkpoints(workdir) as checkpoints:
    training, state, data_keys = _restore(config, task, workdir, checkpoints)
    step = int(state.step[0])
    if step > config.train.steps:
      raise RunFailed(f'{workdir} holds a checkpoint at step {step}, beyond config.train.steps={config.train.steps}; '
                      f'allowed: >= {step} (a run continues, it cannot be shortened), or another workdir')
    if step:
      logging.info('resuming from the checkpoint at step %d', step)
    # Steps after the checkpoint are trained again, so their records (and a line torn by a
    # crash) go.
    records = [r for r in io.read_jsonl(path) if r.get('step', math.inf) <= step]
    io.write_jsonl_atomic(path, records)
    diverged = _diverged_seeds(records)
    chunk = make_train_chunk_fn(config, training, compilations)
    if progress:
      progress(step)
    while step < config.train.steps:
      start = time.perf_counter()
      previous = jax.tree.map(jnp.copy, state)  # The call donates (consumes) `state`.
      state, metrics = chunk(state, data_keys)
      metrics = fetch(metrics)
      finite = metrics.pop('finite')
      steps_per_s = config.train.steps_per_call / (time.perf_counter() - start)
      step = int(state.step[0])
      io.append_jsonl(path, [
          {'seed': seed, 'step': step, 'steps_per_s': steps_per_s, 'finite': bool(finite[i]),
           'tokens_per_s': steps_per_s * float(metrics['tokens'][i]), **{k: float(v[i]) for k, v in metrics.items()}}
          for i, seed in enumerate(seeds)
      ])
      logging.info('step %d loss %.4f token_accuracy %.3f (%.1f steps/s)', step,
                   float(np.mean(metrics['loss'])), float(np.mean(metrics['token_accuracy'])), steps_per_s)
      new = [seed for seed, ok in zip(seeds, finite) if not ok and seed not in diverged]
      if new and len(diverged) + len(new) == len(seeds):
        raise _diverged(training.step, previous, data_keys, config.train.steps_per_call, new,
                        checkpoints.latest_step())
      for seed in new:
        diverged[seed] = f'non-finite loss or parameters in steps {step - config.train.steps_per_call + 1}..{step}'
        logging.warning('seed %d diverged (%s); it is left out of the results, the other seeds train on', seed,
                        diverged[seed])
      if diverged:  # Their last finite parameters stay, so that no checkpoint holds a non-finite one.
        state = _keep_finite(state, previous, [seed not in diverged for seed in seeds])
      if _checkpoint_due(step, config.train):
        checkpoints.save(state, data_keys)
      if progress:
        progress(step)
  return Trained(state.params, training.abstract, step, diverged)


def _keep_finite(state, previous, healthy: list[bool]):
  """`state` with the parameters and optimizer state of the seeds not `healthy` taken from
  `previous` (their last finite ones); the step stays the new one."""
  keep = jnp.asarray(healthy)
  pick = lambda new, old: jnp.where(keep.reshape(-1, *[1] * (new.ndim - 1)), new, old)  # noqa: E731
  return state.replace(params=jax.tree.map(pick, state.params, previous.params),
                       opt_state=jax.tree.map(pick, state.opt_state, previous.opt_state))


def restore_trained(config, task: Task, workdir: str) -> Trained:
  """The latest checkpoint of the run in `workdir`, without training (for re-evaluation);
  RunFailed if there is none."""
  with checkpointing.Checkpoints(workdir) as checkpoints:
    training, state, _ = _restore(config, task, workdir, checkpoints)
  step = int(state.step[0])
  if step == 0:
    raise RunFailed(f'{workdir} holds no checkpoint to evaluate; train the run first')
  records = [r for r in io.read_jsonl(os.path.join(workdir, 'train.jsonl')) if r.get('step', math.inf) <= step]
  return Trained(state.params, training.abstract, step, _diverged_seeds(records))


def _checkpoint_due(step: int, train_config) -> bool:
  """Whether the call that ended at `step` reached a multiple of checkpoint_every (a
  checkpoint's steps do not depend on where a run resumed) or the last step."""
  every = train_config.checkpoint_every
  crossed = every and step // every > (step - train_config.steps_per_call) // every
  return step == train_config.steps or bool(crossed)


def _diverged(train_step, state, data_keys, num_steps: int, bad_seeds: list[int], last_checkpoint) -> RunFailed:
  """The error for a compiled call from `state` after which no seed was finite any more
  (`bad_seeds`: those that went in this call). It names the first step with a non-finite
  loss or state: the call's steps are replayed one at a time (compiled once more, only now)."""
  first = int(state.step[0])
  where = f'in steps {first + 1}..{first + num_steps}'  # If the unfused replay rounds otherwise.

  def checked_step(state, data_key):
    state, metrics = train_step(state, data_key)
    return state, jnp.isfinite(metrics['loss']) & all_finite(state)

  step_fn = jax.jit(jax.vmap(checked_step))
  for _ in range(num_steps):
    state, finite = step_fn(state, data_keys)
    if not fetch(finite).any():
      where = f'at step {int(state.step[0])}'
      break
  checkpoint = 'none' if last_checkpoint is None else f'step {last_checkpoint}'
  return RunFailed(
      f'non-finite loss or parameters {where} (seed {", ".join(map(str, bad_seeds))}); training stopped, '
      f'last good checkpoint: {checkpoint}'
  )


def evaluate(config, task: Task, trained: Trained, path: str, compilations: collections.Counter) -> list[dict]:
  """Scores every length from the task's minimum to eval.max_length and writes the records
  to `path` (eval.jsonl): one per seed and length, and one {'seed', 'diverged'} per
  diverged seed instead of its lengths."""
  graphdef, _ = nnx.split(nnx.view(trained.abstract, deterministic=True))
  bucket_eval = make_bucket_eval_fn(config, task, graphdef, compilations)
  seeds = list(range(config.seed, config.seed + config.num_seeds))
  records = [{'seed': seed, 'diverged': why} for seed, why in sorted(trained.diverged.items())]
  for slot, lengths in evaluation.length_buckets(task.min_length, config.eval.max_length):
    token, sequence, ceiling = fetch(bucket_eval(trained.params, jnp.asarray(lengths, jnp.int32), slot))
    records += [
        {'seed': seed, 'length': length, 'token_accuracy': float(token[i, j]),
         'sequence_accuracy': float(sequence[i, j]), 'position_blind_ceiling': float(ceiling[i, j]),
         'in_training_range': length <= config.train.max_length}
        for i, seed in enumerate(seeds) if seed not in trained.diverged for j, length in enumerate(lengths)
    ]
  io.write_jsonl_atomic(path, records)
  return records


def make_train_chunk_fn(config, training, compilations: collections.Counter):
  """jit(map over seeds, `train.vmap_seeds` at a time) of `train.steps_per_call` fused steps,
  chunk(state, data_keys) -> (state, metrics), the state donated; traces counted as 'train'."""
  chunk_fn = _counted(make_train_chunk(training.step, config.train.steps_per_call), compilations, 'train')
  return jax.jit(over_seeds(chunk_fn, seeds_vectorized(config)), donate_argnums=0)


def make_bucket_eval_fn(config, task: Task, graphdef, compilations: collections.Counter):
  """jit(map over seeds, as in training) of the per-bucket evaluation; `slot` is static."""
  width = seeds_vectorized(config)
  evaluate_bucket = evaluation.make_bucket_eval(
      graphdef, task, make_sampler(config.encoding.positions, training=False),
      config.eval.batch_size, config.model.num_heads * width, jax.random.key(config.eval.seed),
      config.eval.logit_budget,
  )
  per_seed = lambda params, lengths, slot: over_seeds(lambda p: evaluate_bucket(p, lengths, slot), width)(params)  # noqa: E731
  return jax.jit(_counted(per_seed, compilations, 'eval'), static_argnums=2)


def make_summary(config, task: Task, trained: Trained, records: list[dict], compilations, wall_time_s: float) -> dict:
  """summary.json of a run (or an evaluation) from its eval.jsonl records."""
  blind = trained.abstract.position_blind
  return {
      'task': task.name,
      'encoding': config.encoding.name,
      'seeds': config.num_seeds - len(trained.diverged),
      'diverged_seeds': {str(seed): why for seed, why in sorted(trained.diverged.items())},
      'step': trained.step,
      **evaluation.summarize(records, config.train.max_length),
      'chance_accuracy': task.chance_accuracy,
      'position_blind': blind,
      'position_blind_ceiling':
          evaluation.summarize(records, config.train.max_length, 'position_blind_ceiling') if blind else None,
      'eval_positions': eval_positions(config.encoding.positions),
      'compilations': dict(compilations),
      'wall_time_s': wall_time_s,
  }


def run(config, workdir: str, progress=None) -> dict:
  """Runs (or resumes, continues or repairs) the experiment of `config` in `workdir` and
  returns its summary; a finished run's summary is returned as is. `progress(step)`
  follows training. The workdir is locked meanwhile (`locking.hold`).

  A finished run whose train.steps is raised (with the constant schedule) trains on from
  its checkpoint; its earlier eval.jsonl and summary.json are kept with their step in the
  name. A run whose eval.jsonl is torn, missing or incomplete is evaluated again from its
  last checkpoint; a broken summary.json is rebuilt from a complete eval.jsonl.

  Raises ConfigError for a bad config, RunFailed for a diverged run or a workdir that
  holds another config; a run that fails after it started leaves failed.json."""
  start = time.perf_counter()
  task = validate(config)
  with locking.hold(workdir):
    summary = finished_summary(config, workdir)
    if summary is not None:
      logging.info('%s holds a finished run of this config; not run again', workdir)
      return summary
    complete = _write_config(config, workdir) == [] and eval_records(config, task, workdir)
    if evaluates_unseen_positions(config.encoding.positions):
      logging.warning(UNSEEN_POSITIONS_NOTE)
    failed = os.path.join(workdir, FAILED)
    if io.is_writer() and os.path.exists(failed):
      os.remove(failed)
    compilations = collections.Counter()
    try:
      if complete:  # Trained and evaluated: only summary.json is lost.
        logging.warning('%s/summary.json is missing or broken: rebuilt from eval.jsonl', workdir)
        diverged = _diverged_seeds(io.read_jsonl(os.path.join(workdir, 'train.jsonl')))
        abstract = training_from_config(config, task).abstract
        trained, records = Trained(None, abstract, config.train.steps, diverged), complete
      else:
        trained = train(config, task, workdir, compilations, progress)
        records = evaluate(config, task, trained, os.path.join(workdir, EVAL), compilations)
    except Exception as e:
      io.write_json_atomic(failed, {'error': f'{type(e).__name__}: {e}', 'traceback': traceback.format_exc()})
      raise
    summary = make_summary(config, task, trained, records, compilations, time.perf_counter() - start)
    io.write_json_atomic(os.path.join(workdir, SUMMARY), summary)
    return summary


def flat_config(tree: dict, prefix: str = '') -> dict:
  """A nested config dict (as in config.json) as {dotted field name: value}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flat_config(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


# Fields renamed since runs were written (old dotted name: new one), so that a run's
# config.json from before a rename still reads (`current_fields`).
RENAMED_FIELDS = {'train.length_buckets': 'train.length_parts'}


def current_fields(stored: dict, defaults: dict) -> dict:
  """A stored config.json (nested dict) under today's field names (`RENAMED_FIELDS`), with
  the fields it predates taken from `defaults` (the current default config, as a nested
  dict): each field added since defaults to the behaviour the code had before it."""
  merged = {**flat_config(defaults), **{RENAMED_FIELDS.get(k, k): v for k, v in flat_config(stored).items()}}
  nested = {}
  for field, value in merged.items():
    *sections, leaf = field.split('.')
    node = nested
    for section in sections:
      node = node.setdefault(section, {})
    node[leaf] = value
  return nested


def config_json(config) -> dict:
  """The config as config.json holds it."""
  return json.loads(config.to_json_best_effort())


def is_evaluation_field(field: str) -> bool:
  """Whether only evaluation reads `field` (`EVALUATION_FIELDS`)."""
  return any(field == f or field.startswith(f'{f}.') for f in EVALUATION_FIELDS)


def stored_config(workdir: str) -> dict | None:
  """config.json of the run in `workdir`, None if there is none; RunFailed if unreadable."""
  path = os.path.join(workdir, CONFIG)
  try:
    stored = io.read_json(path)
    if stored is not None and not isinstance(stored, dict):
      raise io.Unreadable(f'{path} holds a {type(stored).__name__}, not a config')
  except io.Unreadable as e:
    raise RunFailed(f'{e}; it records which config this run is: restore it, or delete {workdir} to start '
                    'over') from None
  return stored


def differing_fields(config, stored: dict) -> list[str]:
  """Fields in which a run's stored config.json differs from `config`. Workflow fields, and
  fields that only one of them has (added or removed by a code change since), are not
  compared."""
  old, new = flat_config(stored), flat_config(config_json(config))
  return sorted(k for k in old.keys() & new.keys() if k not in WORKFLOW_FIELDS and old[k] != new[k])


def complete(records: list[dict], seeds, lengths) -> bool:
  """Whether `records` (of an eval.jsonl) score every one of `lengths` once for each of
  `seeds` but those with a diverged record."""
  lengths = sorted(lengths)
  for seed in seeds:
    mine = [r for r in records if r.get('seed') == seed]
    scored = sorted(r.get('length') for r in mine if 'token_accuracy' in r)
    if not any('diverged' in r for r in mine) and scored != lengths:
      return False
  return True


def eval_records(config, task: Task, workdir: str) -> list[dict] | None:
  """The records of `workdir`/eval.jsonl if they are complete for `config`; else None."""
  records = io.read_jsonl(os.path.join(workdir, EVAL))
  seeds = range(config.seed, config.seed + config.num_seeds)
  return records if complete(records, seeds, range(task.min_length, config.eval.max_length + 1)) else None


def finished_summary(config, workdir: str) -> dict | None:
  """The summary of a finished run of `config` in `workdir`: a readable summary.json, the
  same config (workflow fields aside) and a complete eval.jsonl; None otherwise."""
  try:
    stored, summary = stored_config(workdir), io.read_json(os.path.join(workdir, SUMMARY))
  except (RunFailed, io.Unreadable):
    return None
  if stored is None or not isinstance(summary, dict) or differing_fields(config, stored):
    return None
  return summary if eval_records(config, get_task(config.task.name), workdir) is not None else None


def _write_config(config, workdir: str) -> list[str] | None:
  """Writes config.json and returns the fields in which the run there differed (None: no
  run there). Raises RunFailed for a run of another config; a raised train.steps continues
  the run (with the constant schedule), after its results so far are renamed with their
  step (eval.step<N>.jsonl, summary.step<N>.json)."""
  stored = stored_config(workdir)
  differing = None if stored is None else differing_fields(config, stored)
  other = [f for f in differing or [] if f != 'train.steps']
  if other and all(is_evaluation_field(f) for f in other):
    raise RunFailed(
        f'{workdir} holds a run evaluated with other settings ({", ".join(other)}); evaluate it again without '
        f'retraining: python -m pe_research.evaluate --workdir={workdir} '
        + ' '.join(f'--config.{f}=...' for f in other)
    )
  if other:
    raise RunFailed(f'{workdir} holds a run of another config (differing in {", ".join(other)}); '
                    'use another workdir or delete this one')
  if differing:  # train.steps: continue (or finish) the run.
    if config.train.schedule != 'constant':
      raise RunFailed(
          f'{workdir} holds a run of train.steps={stored["train"]["steps"]}; with train.schedule='
          f'{config.train.schedule!r} the rate decays over train.steps, so training on to {config.train.steps} would '
          "not equal a run trained that long; use another workdir, or schedule='constant'"
      )
    for name in (EVAL, SUMMARY):
      path = os.path.join(workdir, name)
      if io.is_writer() and os.path.exists(path):
        base, ext = os.path.splitext(path)
        os.replace(path, f'{base}.step{stored["train"]["steps"]}{ext}')
  io.write_json_atomic(os.path.join(workdir, CONFIG), config_json(config))
  return differing


UNSEEN_POSITIONS_NOTE = (
    'encoding.positions: training draws random positions but evaluation uses 0..T-1 '
    '(resample_at_eval=False), positions the model never saw together; Ruoss et al. resample them at '
    'evaluation (resample_at_eval=True, the default)')


def eval_positions(positions_config) -> str:
  """How evaluation places positions, for the summary: 'contiguous', 'random' (resampled, as
  in training) or 'contiguous after random training' (see UNSEEN_POSITIONS_NOTE)."""
  if evaluates_unseen_positions(positions_config):
    return 'contiguous after random training'
  return 'random' if positions_config.sampler in RANDOM_SAMPLERS else 'contiguous'


def _score(value) -> str:
  return 'n/a' if value is None or math.isnan(value) else f'{value:.3f}'


def format_summary(summary: dict) -> str:
  """The summary as a few human-readable lines."""
  compiled = ', '.join(f'{k} {v}' for k, v in sorted(summary['compilations'].items())) or 'none'
  unseen = _score(summary['unseen_lengths_accuracy'])
  lines = [
      f"task {summary['task']}, encoding {summary['encoding']}, {summary['seeds']} seed(s)",
      f"in-distribution accuracy  {_score(summary['in_distribution_accuracy'])}",
      f"unseen-lengths accuracy   {unseen}   (chance {summary['chance_accuracy']:.3f})"
      + (' (no evaluated length is longer than train.max_length)' if unseen == 'n/a' else ''),
  ]
  ceiling = summary.get('position_blind_ceiling')
  if ceiling:
    lines.append(f"position-blind ceiling    {_score(ceiling['in_distribution_accuracy'])} in distribution, "
                 f"{_score(ceiling['unseen_lengths_accuracy'])} unseen (bidirectional, no positions: every answer "
                 'slot gets the same output)')
  for seed, why in summary.get('diverged_seeds', {}).items():
    lines.append(f'diverged                  seed {seed}: {why} (left out of the scores)')
  if summary.get('eval_positions') == 'contiguous after random training':
    lines.append(f'note                      {UNSEEN_POSITIONS_NOTE}')
  lines += [f"compilations              {compiled}", f"wall time                 {summary['wall_time_s']:.1f} s"]
  return '\n'.join(lines)
