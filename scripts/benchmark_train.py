"""Training throughput of a config: steps/s, tokens/s and compilations.

    python scripts/benchmark_train.py --config=configs/default.py [--config.train.max_length=40]

Measures the compiled training chunk (steps fused by lax.scan, seeds vmapped) for several
`steps_per_call` and `num_seeds`, after a warm-up call, as the median of `--repeats` calls.
"""

import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from pe_research.training.train_step import make_train_chunk, training_from_config
from pe_research.validation import validate

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config.', lock_config=True)
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per setting.')
_STEPS_PER_CALL = flags.DEFINE_list('steps_per_call', ['1', '10', '100'], 'Fused steps per compiled call.')
_NUM_SEEDS = flags.DEFINE_list('num_seeds', ['1', '4'], 'Seeds trained together.')


def measure(config, task, steps_per_call: int, num_seeds: int):
  """(compile seconds, steps/s per seed, compilations) of one setting."""
  traces = []
  training = training_from_config(config, task)
  chunk_fn = make_train_chunk(training.step, steps_per_call)

  def counted(state, key):
    traces.append(1)
    return chunk_fn(state, key)

  chunk = jax.jit(jax.vmap(counted))
  keys = jax.random.split(jax.random.key(0), num_seeds)
  state = jax.jit(jax.vmap(training.init))(keys)
  start = time.perf_counter()
  state, _ = jax.block_until_ready(chunk(state, keys))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    state, _ = jax.block_until_ready(chunk(state, keys))
    times.append(time.perf_counter() - start)
  return compile_s, steps_per_call / statistics.median(times), len(traces)


def main(argv):
  del argv
  config = _CONFIG.value
  task = validate(config)
  length = config.train.max_length
  tokens_per_step = config.train.batch_size * (length + int(task.output_length(length)))
  print(f'{jax.devices()[0].platform} | task {task.name} | encoding {config.encoding.name} | '
        f'batch {config.train.batch_size} x {tokens_per_step // config.train.batch_size} tokens | '
        f'{config.model.num_layers} layers, width {config.model.model_dim}')
  print('steps/call | seeds | first call (compile) s | steps/s per seed | model-steps/s | tokens/s | compilations')
  for steps_per_call in map(int, _STEPS_PER_CALL.value):
    for num_seeds in map(int, _NUM_SEEDS.value):
      compile_s, steps_per_s, compiles = measure(config, task, steps_per_call, num_seeds)
      print(f'{steps_per_call:10d} | {num_seeds:5d} | {compile_s:22.1f} | {steps_per_s:16.1f} | '
            f'{steps_per_s * num_seeds:13.1f} | {steps_per_s * num_seeds * tokens_per_step:8.0f} | {compiles}')


if __name__ == '__main__':
  app.run(main)
