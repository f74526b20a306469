"""Cost of generating each task's data, against the training step it feeds.

    python scripts/benchmark_tasks.py [--tasks=sort,addition] [--repeats=10]

For every task: the median time of a jitted `task.sample(key, 128, 500)` (128 examples of
length 500, the longest the paper evaluates), and of one jitted training step of the
default model (configs/default.py) on that task with train.max_length=40 and batch 128
(the paper's training protocol), each after a warm-up call, with a fresh key per call.
Generation runs inside the compiled step, so the ratio is the share of a step that
sampling a batch would take even at the longest evaluation length; it should stay below
0.1. Timings are wall-clock on the default JAX device and are noisy on a shared machine.
"""

import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from pe_research.tasks import TASKS, get_task
from pe_research.training.train_step import training_from_config
from pe_research.validation import validate

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config.', lock_config=True)
_TASKS = flags.DEFINE_list('tasks', list(TASKS), 'Tasks to measure.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed calls per measurement.')
_SAMPLE_LENGTH = flags.DEFINE_integer('sample_length', 500, 'Input length of the sampled batch.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Examples per sampled batch and per training step.')
_TRAIN_LENGTH = flags.DEFINE_integer('train_length', 40, 'train.max_length of the training step.')


def median_ms(fn, *args) -> float:
  """Median wall time of `fn(key, *args)` in ms over --repeats calls, after a warm-up."""
  jax.block_until_ready(fn(jax.random.key(0), *args))
  times = []
  for i in range(_REPEATS.value):
    key = jax.random.key(i + 1)
    start = time.perf_counter()
    jax.block_until_ready(fn(key, *args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def train_step_ms(config) -> float:
  """One jitted training step of the config's model, built as `experiment.train` does."""
  training = training_from_config(config, validate(config))
  step = jax.jit(training.step)
  state = jax.jit(training.init)(jax.random.key(0))
  return median_ms(lambda key, state: step(state, key), state)


def main(argv):
  del argv
  length, batch = _SAMPLE_LENGTH.value, _BATCH.value
  print(f'{jax.devices()[0].platform} | sample: batch {batch} at length {length} | train step: default model, '
        f'batch {batch}, train.max_length {_TRAIN_LENGTH.value} | median of {_REPEATS.value}')
  print(f'{"task":28s} | sample ms | train step ms | ratio')
  worst = 0.0
  for name in _TASKS.value:
    task = get_task(name)
    sample = jax.jit(lambda key, task=task: task.sample(key, batch, length))
    sample_ms = median_ms(sample)
    config = _CONFIG.value.copy_and_resolve_references()
    config.task.name = name
    config.train.max_length = _TRAIN_LENGTH.value
    config.train.batch_size = batch
    step_ms = train_step_ms(config)
    worst = max(worst, sample_ms / step_ms)
    print(f'{name:28s} | {sample_ms:9.2f} | {step_ms:13.1f} | {sample_ms / step_ms:5.3f}', flush=True)
  print(f'largest ratio {worst:.3f} ({"below" if worst < 0.1 else "NOT below"} 0.1)')


if __name__ == '__main__':
  app.run(main)
