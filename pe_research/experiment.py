"""`run(config, workdir)`: validate, train, evaluate every length, write the results.

Writes to `workdir`:
  config.json   the full config;
  train.jsonl   per seed, every `steps_per_call` steps: loss, accuracies, steps/s, tokens/s;
  eval.jsonl    per seed and length: token and sequence accuracy, in or out of the
                training range;
  summary.json  in-distribution accuracy, mean accuracy over unseen lengths, compilations
                and wall time (also printed).
"""

import collections
import functools
import json
import os
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pe_research import evaluation, io
from pe_research.model.build import build_model
from pe_research.positions import make_sampler
from pe_research.tasks.base import Task
from pe_research.training.optimizer import make_optimizer
from pe_research.training.train_step import init_state, make_train_chunk, make_train_step
from pe_research.validation import validate


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


def train(config, task: Task, workdir: str, compilations: collections.Counter):
  """Trains `num_seeds` models together; returns (params with a leading seed axis, graphdef)."""
  make_model = functools.partial(build_model, config, task)
  abstract = nnx.eval_shape(lambda: make_model(nnx.Rngs(0)))
  graphdef, _ = nnx.split(abstract)
  optimizer = make_optimizer(config.train)
  train_step = make_train_step(
      graphdef, optimizer, task, make_sampler(config.encoding.positions, training=True), config.train,
      dropout=config.model.dropout > 0,
  )
  chunk = jax.jit(jax.vmap(_counted(make_train_chunk(train_step, config.train.steps_per_call), compilations, 'train')))
  init_keys, data_keys = seed_keys(config)
  state = jax.jit(jax.vmap(functools.partial(init_state, make_model, optimizer)))(init_keys)
  seeds = range(config.seed, config.seed + config.num_seeds)
  max_length = config.train.max_length
  tokens_per_step = config.num_seeds * config.train.batch_size * (max_length + int(task.output_length(max_length)))
  path = os.path.join(workdir, 'train.jsonl')
  for _ in range(config.train.steps // config.train.steps_per_call):
    start = time.perf_counter()
    state, metrics = chunk(state, data_keys)
    metrics = jax.device_get(metrics)
    steps_per_s = config.train.steps_per_call / (time.perf_counter() - start)
    step = int(state.step[0])
    io.append_jsonl(path, [
        {'seed': seed, 'step': step, 'steps_per_s': steps_per_s, 'tokens_per_s': steps_per_s * tokens_per_step,
         **{k: float(v[i]) for k, v in metrics.items()}}
        for i, seed in enumerate(seeds)
    ])
    logging.info('step %d loss %.4f token_accuracy %.3f (%.1f steps/s)', step,
                 float(np.mean(metrics['loss'])), float(np.mean(metrics['token_accuracy'])), steps_per_s)
  return state.params, abstract


def evaluate(config, task: Task, params, abstract, workdir: str, compilations: collections.Counter) -> list[dict]:
  """Scores every length from the task's minimum to eval.max_length; writes eval.jsonl."""
  graphdef, _ = nnx.split(nnx.view(abstract, deterministic=True))
  bucket_eval = make_bucket_eval_fn(config, task, graphdef, compilations)
  seeds = list(range(config.seed, config.seed + config.num_seeds))
  records = []
  for slot, lengths in evaluation.length_buckets(task.min_length, config.eval.max_length):
    token, sequence = jax.device_get(bucket_eval(params, jnp.asarray(lengths, jnp.int32), slot))
    records += [
        {'seed': seed, 'length': length, 'token_accuracy': float(token[i, j]),
         'sequence_accuracy': float(sequence[i, j]), 'in_training_range': length <= config.train.max_length}
        for i, seed in enumerate(seeds) for j, length in enumerate(lengths)
    ]
  io.append_jsonl(os.path.join(workdir, 'eval.jsonl'), records)
  return records


def make_bucket_eval_fn(config, task: Task, graphdef, compilations: collections.Counter):
  """jit(vmap over seeds) of the per-bucket evaluation; `slot` is static."""
  evaluate_bucket = evaluation.make_bucket_eval(
      graphdef, task, make_sampler(config.encoding.positions, training=False),
      config.eval.batch_size, config.model.num_heads * config.num_seeds, jax.random.key(config.eval.seed),
  )
  per_seed = lambda params, lengths, slot: jax.vmap(lambda p: evaluate_bucket(p, lengths, slot))(params)  # noqa: E731
  return jax.jit(_counted(per_seed, compilations, 'eval'), static_argnums=2)


def run(config, workdir: str) -> dict:
  """Runs the experiment of `config` in `workdir` and returns its summary."""
  start = time.perf_counter()
  task = validate(config)
  os.makedirs(workdir, exist_ok=True)
  io.write_json_atomic(os.path.join(workdir, 'config.json'), json.loads(config.to_json_best_effort()))
  compilations = collections.Counter()
  params, abstract = train(config, task, workdir, compilations)
  records = evaluate(config, task, params, abstract, workdir, compilations)
  summary = {
      'task': task.name,
      'encoding': config.encoding.name,
      'seeds': config.num_seeds,
      **evaluation.summarize(records, config.train.max_length),
      'chance_accuracy': task.chance_accuracy,
      'compilations': dict(compilations),
      'wall_time_s': time.perf_counter() - start,
  }
  io.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  return summary


def format_summary(summary: dict) -> str:
  """The summary as a few human-readable lines."""
  compiled = ', '.join(f'{k} {v}' for k, v in sorted(summary['compilations'].items()))
  return '\n'.join([
      f"task {summary['task']}, encoding {summary['encoding']}, {summary['seeds']} seed(s)",
      f"in-distribution accuracy  {summary['in_distribution_accuracy']:.3f}",
      f"unseen-lengths accuracy   {summary['unseen_lengths_accuracy']:.3f}   (chance {summary['chance_accuracy']:.3f})",
      f"compilations              {compiled}",
      f"wall time                 {summary['wall_time_s']:.1f} s",
  ])
