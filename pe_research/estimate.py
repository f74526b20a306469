"""What a sweep will cost, measured on the machine it is asked on, before anything is launched.

    python -m pe_research.sweep --sweep=configs/sweeps/deletang2023.py:published --workdir=runs/x --dry_run

For each task of the sweep, its first cell still to run is compiled and timed for a few
compiled calls of training (`train.steps_per_call` steps each, every seed of the cell at
once, as a run trains them); every cell of that task is then estimated at its own number of
steps at that speed, plus the compilation. Other encodings and learning rates of a task are
taken to train at the same speed (encodings differ by a small factor: docs/performance.md),
and evaluation comes on top: so the estimate is of training, on this machine's devices, in
device-hours (one cell holds one device, or one CPU worker).
"""

import collections
import dataclasses
import time

import jax

from pe_research.tasks import get_task
from pe_research.training.train_step import training_from_config

# Compiled calls timed after the first (which compiles); the fastest counts.
TIMED_CALLS = 2


@dataclasses.dataclass(frozen=True)
class Speed:
  compile_s: float
  seconds_per_step: float


def measure(config) -> Speed:
  """The training speed of `config` on this machine's default device."""
  from pe_research import experiment  # noqa: PLC0415  (only a dry run needs it)

  task = get_task(config.task.name)
  training = training_from_config(config, task)
  init_keys, data_keys = experiment.seed_keys(config)
  state = jax.jit(jax.vmap(training.init))(init_keys)
  chunk = experiment.make_train_chunk_fn(config, training, collections.Counter())
  start = time.perf_counter()
  state, metrics = chunk(state, data_keys)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  fastest = float('inf')
  for _ in range(TIMED_CALLS):
    start = time.perf_counter()
    state, metrics = chunk(state, data_keys)
    jax.block_until_ready(metrics)
    fastest = min(fastest, time.perf_counter() - start)
  return Speed(compile_s, fastest / config.train.steps_per_call)


def estimate(cells: list[tuple[str, object]], measure_fn=measure) -> list[tuple[str, float]]:
  """[(cell name, estimated seconds)] for (name, config) cells, measuring one cell per task."""
  speeds = {}
  result = []
  for name, config in cells:
    if config.task.name not in speeds:
      speeds[config.task.name] = measure_fn(config)
    speed = speeds[config.task.name]
    result.append((name, speed.compile_s + config.train.steps * speed.seconds_per_step))
  return result
