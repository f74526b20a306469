"""`run(config, workdir)`: validate, train, evaluate every length, write the results.

Writes to `workdir`:
  config.json   the full config;
  train.jsonl   per seed, every `steps_per_call` steps: loss, accuracies, steps/s, and the
                real (unpadded) tokens per step and per second of that seed's model;
  checkpoints/  the latest training state, every `train.checkpoint_every` steps and at the
                end (see `pe_research.checkpointing`);
  eval.jsonl    per seed and length: token and sequence accuracy, in or out of the
                training range, and the position-blind ceiling of the same examples
                (`training.metrics.position_blind_ceiling`);
  summary.json  in-distribution accuracy, mean accuracy over unseen lengths, chance, whether
                the model is position-blind and then its ceiling, how evaluation placed
                positions, compilations and wall time (also printed); its presence marks
                the run finished;
  failed.json   only after a failure: the error, e.g. a non-finite loss naming its step.

Interrupted runs resume: run the same config on the same workdir again and training goes on
from the latest checkpoint, ending bit-identical to a run that never stopped (train.jsonl
is first cut back to the checkpoint's step; eval.jsonl and summary.json are written once,
at the end). A finished run is not run again. Every file is written atomically or by
whole-line appends (`pe_research.io`), so a crash never leaves one unreadable.
"""

import collections
import functools
import json
import os
import time
import traceback

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pe_research import checkpointing, evaluation, io
from pe_research.positions import RANDOM_SAMPLERS, evaluates_unseen_positions, make_sampler
from pe_research.tasks.base import Task
from pe_research.training.sharding import fetch, over_seeds, place, seeds_vectorized, state_sharding
from pe_research.training.train_step import make_train_chunk, training_from_config
from pe_research.validation import validate

FAILED = 'failed.json'
# Fields that do not change a run's results: a run may resume under other values of them.
WORKFLOW_FIELDS = ('train.checkpoint_every',)


class RunFailed(RuntimeError):
  """A run stopped for the reason its message gives (a non-finite loss, a workdir that
  holds another config); command-line tools print it without a traceback."""


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


def train(config, task: Task, workdir: str, compilations: collections.Counter, progress=None):
  """Trains `num_seeds` models together, from the latest checkpoint in `workdir` if any;
  returns (params with a leading seed axis, abstract model). `progress(step)`, if given, is
  called at the start and after every compiled call."""
  training = training_from_config(config, task)
  chunk = make_train_chunk_fn(config, training, compilations)
  init_keys, data_keys = seed_keys(config)
  state = jax.jit(jax.vmap(training.init))(init_keys)
  seeds = range(config.seed, config.seed + config.num_seeds)
  path = os.path.join(workdir, 'train.jsonl')
  with checkpointing.Checkpoints(workdir) as checkpoints:
    state, data_keys = checkpoints.restore(state, data_keys)
    # With several devices, the state is placed on them (no-op on one device).
    state, data_keys = place((state, data_keys), state_sharding(config))
    step = int(state.step[0])
    if step:
      logging.info('resuming from the checkpoint at step %d', step)
    # Steps after the checkpoint are trained again, so their records (and a line torn by a
    # crash) go.
    io.write_jsonl_atomic(path, [r for r in io.read_jsonl(path) if r['step'] <= step])
    if progress:
      progress(step)
    while step < config.train.steps:
      start = time.perf_counter()
      previous = jax.tree.map(jnp.copy, state)  # The call donates (consumes) `state`.
      state, metrics = chunk(state, data_keys)
      metrics = fetch(metrics)
      steps_per_s = config.train.steps_per_call / (time.perf_counter() - start)
      step = int(state.step[0])
      io.append_jsonl(path, [
          {'seed': seed, 'step': step, 'steps_per_s': steps_per_s,
           'tokens_per_s': steps_per_s * float(metrics['tokens'][i]), **{k: float(v[i]) for k, v in metrics.items()}}
          for i, seed in enumerate(seeds)
      ])
      logging.info('step %d loss %.4f token_accuracy %.3f (%.1f steps/s)', step,
                   float(np.mean(metrics['loss'])), float(np.mean(metrics['token_accuracy'])), steps_per_s)
      bad_seeds = [seed for seed, loss in zip(seeds, metrics['loss']) if not np.isfinite(loss)]
      if bad_seeds:
        raise _diverged(training.step, previous, data_keys, config.train.steps_per_call, bad_seeds,
                        checkpoints.latest_step())
      if _checkpoint_due(step, config.train):
        checkpoints.save(state, data_keys)
      if progress:
        progress(step)
  return state.params, training.abstract


def _checkpoint_due(step: int, train_config) -> bool:
  """Whether the call that ended at `step` reached a multiple of checkpoint_every (a
  checkpoint's steps do not depend on where a run resumed) or the last step."""
  every = train_config.checkpoint_every
  crossed = every and step // every > (step - train_config.steps_per_call) // every
  return step == train_config.steps or bool(crossed)


def _diverged(train_step, state, data_keys, num_steps: int, bad_seeds: list[int], last_checkpoint) -> RunFailed:
  """The error for a compiled call from `state` whose loss was not finite for `bad_seeds`.
  It names the first such step: the call's steps are replayed one at a time (compiled once
  more, only now)."""
  first = int(state.step[0])
  where = f'in steps {first + 1}..{first + num_steps}'  # If the unfused replay rounds otherwise.
  step_fn = jax.jit(jax.vmap(train_step))
  for _ in range(num_steps):
    state, metrics = step_fn(state, data_keys)
    if not np.isfinite(fetch(metrics['loss'])).all():
      where = f'at step {int(state.step[0])}'
      break
  checkpoint = 'none' if last_checkpoint is None else f'step {last_checkpoint}'
  return RunFailed(
      f'non-finite loss {where} (seed {", ".join(map(str, bad_seeds))}); training stopped, '
      f'last good checkpoint: {checkpoint}'
  )


def evaluate(config, task: Task, params, abstract, workdir: str, compilations: collections.Counter) -> list[dict]:
  """Scores every length from the task's minimum to eval.max_length; writes eval.jsonl."""
  graphdef, _ = nnx.split(nnx.view(abstract, deterministic=True))
  bucket_eval = make_bucket_eval_fn(config, task, graphdef, compilations)
  seeds = list(range(config.seed, config.seed + config.num_seeds))
  records = []
  for slot, lengths in evaluation.length_buckets(task.min_length, config.eval.max_length):
    token, sequence, ceiling = fetch(bucket_eval(params, jnp.asarray(lengths, jnp.int32), slot))
    records += [
        {'seed': seed, 'length': length, 'token_accuracy': float(token[i, j]),
         'sequence_accuracy': float(sequence[i, j]), 'position_blind_ceiling': float(ceiling[i, j]),
         'in_training_range': length <= config.train.max_length}
        for i, seed in enumerate(seeds) for j, length in enumerate(lengths)
    ]
  io.write_jsonl_atomic(os.path.join(workdir, 'eval.jsonl'), records)
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


def run(config, workdir: str, progress=None) -> dict:
  """Runs (or resumes) the experiment of `config` in `workdir` and returns its summary; a
  finished run's summary is returned as is. `progress(step)` follows training.

  Raises ValueError for a bad config, RunFailed for a diverged run or a workdir that
  holds another config; a run that fails after it started leaves failed.json."""
  start = time.perf_counter()
  task = validate(config)
  os.makedirs(workdir, exist_ok=True)
  summary = finished_summary(config, workdir)
  if summary is not None:
    logging.info('%s holds a finished run of this config; not run again', workdir)
    return summary
  _write_config(config, workdir)
  if evaluates_unseen_positions(config.encoding.positions):
    logging.warning(UNSEEN_POSITIONS_NOTE)
  failed = os.path.join(workdir, FAILED)
  if os.path.exists(failed):
    os.remove(failed)
  compilations = collections.Counter()
  try:
    params, abstract = train(config, task, workdir, compilations, progress)
    records = evaluate(config, task, params, abstract, workdir, compilations)
  except Exception as e:
    io.write_json_atomic(failed, {'error': f'{type(e).__name__}: {e}', 'traceback': traceback.format_exc()})
    raise
  blind = abstract.position_blind
  summary = {
      'task': task.name,
      'encoding': config.encoding.name,
      'seeds': config.num_seeds,
      **evaluation.summarize(records, config.train.max_length),
      'chance_accuracy': task.chance_accuracy,
      'position_blind': blind,
      'position_blind_ceiling':
          evaluation.summarize(records, config.train.max_length, 'position_blind_ceiling') if blind else None,
      'eval_positions': eval_positions(config.encoding.positions),
      'compilations': dict(compilations),
      'wall_time_s': time.perf_counter() - start,
  }
  io.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
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


def _config_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def _differing_fields(config, workdir: str) -> list[str] | None:
  """Fields in which the run in `workdir` differs from `config`; None if `workdir` holds no
  run. Workflow fields, and fields that only one of them has (added or removed by a code
  change since), are not compared."""
  stored = io.read_json(os.path.join(workdir, 'config.json'))
  if stored is None:
    return None
  old, new = flat_config(stored), flat_config(_config_json(config))
  return sorted(k for k in old.keys() & new.keys() if k not in WORKFLOW_FIELDS and old[k] != new[k])


def finished_summary(config, workdir: str) -> dict | None:
  """The summary of a finished run of `config` in `workdir`; None if there is none."""
  summary = io.read_json(os.path.join(workdir, 'summary.json'))
  return summary if summary is not None and _differing_fields(config, workdir) == [] else None


def _write_config(config, workdir: str) -> None:
  """Writes config.json, refusing a workdir that holds a run of another config."""
  differing = _differing_fields(config, workdir)
  if differing:
    raise RunFailed(
        f'{workdir} holds a run of another config (differing in {", ".join(differing)}); '
        'use another workdir or delete this one'
    )
  io.write_json_atomic(os.path.join(workdir, 'config.json'), _config_json(config))


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


def format_summary(summary: dict) -> str:
  """The summary as a few human-readable lines."""
  compiled = ', '.join(f'{k} {v}' for k, v in sorted(summary['compilations'].items()))
  lines = [
      f"task {summary['task']}, encoding {summary['encoding']}, {summary['seeds']} seed(s)",
      f"in-distribution accuracy  {summary['in_distribution_accuracy']:.3f}",
      f"unseen-lengths accuracy   {summary['unseen_lengths_accuracy']:.3f}   (chance {summary['chance_accuracy']:.3f})",
  ]
  ceiling = summary.get('position_blind_ceiling')
  if ceiling:
    lines.append(f"position-blind ceiling    {ceiling['in_distribution_accuracy']:.3f} in distribution, "
                 f"{ceiling['unseen_lengths_accuracy']:.3f} unseen (bidirectional, no positions: every answer "
                 'slot gets the same output)')
  if summary.get('eval_positions') == 'contiguous after random training':
    lines.append(f'note                      {UNSEEN_POSITIONS_NOTE}')
  lines += [f"compilations              {compiled}", f"wall time                 {summary['wall_time_s']:.1f} s"]
  return '\n'.join(lines)
