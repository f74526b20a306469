"""Speed of a config's training, evaluation and forward pass, in one table.

    python scripts/benchmark.py [--models=default,paper] [--torch=auto] [--eval_batch=64] \
        [--eval_lengths=41..500] [--repeats=3] [--json_out=benchmark.json] [--markdown_out=table.md]
    python scripts/benchmark.py --quick        # tiny settings, a smoke test (under a minute)

Columns: one per model of `--models`, variants of `--config` (`default`: the config file as
given; `paper`: its `:paper` variant; `--config.x=...` overrides apply to every model). When
PyTorch is importable (`pip install torch==2.13.0`; never a dependency of the project) each
is followed by the same model in eager PyTorch (`scripts/torch_twin.py`, its logits checked
against the JAX model's first; one thread per core unless `--torch_threads`) and by the
ratio JAX / PyTorch (above 1: JAX is faster). PyTorch runs after every JAX measurement, on
the GPU when JAX runs on one (CUDA), at the same float32 matmul precision as JAX's default
there (TF32: `torch.set_float32_matmul_precision('high')`); the logit check runs at full
float32 in both.

Rows:
  matmul peak          GFLOP/s of a jitted f32 N x N matmul at JAX's default precision (TF32
                       on recent NVIDIA GPUs), best of 5: the device's (N = 2048 on CPU,
                       8192 on accelerators).
  train ...            the project's compiled training chunk (`--steps_per_call` steps, one
                       seed): steps/s and tokens/s (real input + answer tokens), the median
                       of `--repeats` calls after the first; FLOPs per step as XLA counts
                       them (`cost_analysis()` of the compiled chunk) and analytically
                       (`analytic_step_flops`), and the XLA count's rate as a share of the
                       matmul peak; compile time (the first call minus a timed call) and
                       compilations (traces). PyTorch: the same number of eager steps per
                       call, on batches of the same shapes (`training_batches`).
  N seeds              model-steps/s of the same chunk with `--seeds` seeds vmapped in one
                       call (`train.vmap_seeds=0`), and its ratio to one seed's (1 or
                       more: seeds together pay off); then the ratio with the seeds in a
                       loop inside the call (`train.vmap_seeds=1`).
  eval ...             the project's evaluation (`experiment.make_bucket_eval_fn`) of every
                       length of `--eval_lengths`, `--eval_batch` sequences each, for one
                       model: total time, of which compilation, and compilations.
  forward ...          the jitted model on `--forward_batch` random sequences of T tokens
                       (all real, logits at the last one; PyTorch under no_grad): tokens/s
                       (median of `--repeats` calls after a warm-up) and XLA's memory for
                       it (temporaries + arguments + outputs). As in evaluation, the batch
                       goes in micro-batches, and attention in query blocks, within the
                       logit budget (`--config.eval.logit_budget`; 0: the platform's
                       default, `evaluation.logit_budget`).
  peak RSS             the process's peak resident memory once the column was measured; on
                       an accelerator also the device's peak memory in use
                       (`memory_stats()`, all of the process's work so far).
  PyTorch twin ...     max |logit difference| of the twin on a training batch (it must be
                       within 1e-4 of the logits' scale, or the script stops).
The machine's other load shows in every timing; compare numbers from one run. Like the
launchers, the script first applies `pe_research.runtime` (tcmalloc preloaded when installed).
"""

from pe_research import runtime

if __name__ == '__main__':
  runtime.configure()  # The launchers' CPU defaults (tcmalloc when installed), as in a run.

import collections  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import flax.nnx as nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from pe_research import evaluation, experiment, sweep  # noqa: E402
from pe_research.model.readout import layout  # noqa: E402
from pe_research.positions import make_sampler  # noqa: E402
from pe_research.training import train_step  # noqa: E402
from pe_research.validation import validate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config.', lock_config=True)
_MODELS = flags.DEFINE_list('models', ['default', 'paper'], "Variants of --config: 'default' (as given) or a suffix.")
_TORCH = flags.DEFINE_enum('torch', 'auto', ['auto', 'true', 'false'], 'Time the PyTorch twin (auto: if importable).')
_TORCH_THREADS = flags.DEFINE_integer('torch_threads', 0, 'PyTorch intra-op threads (0: one per CPU core).')
_EVAL_BATCH = flags.DEFINE_integer('eval_batch', 64, 'Evaluation sequences per length.')
_EVAL_LENGTHS = flags.DEFINE_string('eval_lengths', '41..500', 'Evaluated input lengths, MIN..MAX.')
_FORWARD_LENGTHS = flags.DEFINE_list('forward_lengths', ['640', '4096'], 'Sequence lengths T of the forward rows.')
_FORWARD_BATCH = flags.DEFINE_integer('forward_batch', 8, 'Sequences per forward call.')
_STEPS_PER_CALL = flags.DEFINE_integer('steps_per_call', 10, 'Training steps per timed call.')
_SEEDS = flags.DEFINE_integer('seeds', 8, 'Seeds trained together in the seeds rows.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement.')
_QUICK = flags.DEFINE_boolean('quick', False, 'Tiny settings (overriding the flags above): a smoke test.')
_JSON_OUT = flags.DEFINE_string('json_out', None, 'Also write the numbers to this JSON file.')
_MARKDOWN_OUT = flags.DEFINE_string('markdown_out', None, 'Also write the table, stamped with the machine, the '
                                    'versions and the command, to this Markdown file (for docs/performance.md).')


@dataclasses.dataclass(frozen=True)
class Settings:
  eval_batch: int
  eval_lengths: tuple[int, int]
  forward_lengths: tuple[int, ...]
  forward_batch: int
  steps_per_call: int
  seeds: int
  repeats: int


QUICK = dict(eval_batch=4, eval_lengths=(41, 44), forward_lengths=(64, 256), forward_batch=2, steps_per_call=2,
             seeds=2, repeats=1)
# --quick also shrinks every model, to compile in seconds.
QUICK_CONFIG = {'model.num_layers': 1, 'train.batch_size': 8, 'train.max_length': 8, 'train.length_parts': 1}


def settings_from_flags() -> Settings:
  low, high = _EVAL_LENGTHS.value.split('..')
  settings = Settings(
      eval_batch=_EVAL_BATCH.value, eval_lengths=(int(low), int(high)),
      forward_lengths=tuple(map(int, _FORWARD_LENGTHS.value)), forward_batch=_FORWARD_BATCH.value,
      steps_per_call=_STEPS_PER_CALL.value, seeds=_SEEDS.value, repeats=_REPEATS.value,
  )
  return dataclasses.replace(settings, **QUICK) if _QUICK.value else settings


def model_configs() -> dict:
  """{model name: config}: each `--models` variant of the --config file, with its overrides."""
  path, _, variant = config_flags.get_config_filename(flags.FLAGS['config']).partition(':')
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  configs = {}
  for name in _MODELS.value:
    config = sweep.load_config(path, ','.join(filter(None, [variant, '' if name == 'default' else name])))
    config.update_from_flattened_dict({**overrides, **(QUICK_CONFIG if _QUICK.value else {})})
    configs[name] = config
  return configs


def seconds(fn) -> float:
  """Wall time of one call of `fn` (which blocks until its work is done)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `repeats` calls of `fn`."""
  return statistics.median(seconds(fn) for _ in range(repeats))


def matmul_size() -> int:
  """The peak matmul's side: large enough to fill the device."""
  return 2048 if jax.default_backend() == 'cpu' else 8192


def matmul_peak_flops(size: int, tries: int = 5) -> float:
  """FLOP/s of the best of `tries` jitted f32 [size, size] matmuls."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, a))
  return 2 * size**3 / min(seconds(lambda: jax.block_until_ready(matmul(a, a))) for _ in range(tries))


def step_parts(config, task) -> list[train_step.LengthPart]:
  """The parts (examples, padded input slot) that every training step's batch is cut into."""
  train = config.train
  min_length = max(train.min_length, task.min_length)
  return train_step.length_parts(min_length, train.max_length, train.batch_size, train.length_parts)


def analytic_step_flops(config, task) -> float:
  """Matmul FLOPs of one training step of one seed: for each part of the batch, on its
  padded sequence of T tokens (slot plus answer slots), per token and layer 2 * 4 D^2
  (query, key, value and output projections) + 2 * 2 mlp_ratio D^2 (MLP) + 4 T D (logits
  and weighted values); x3 for the forward and backward passes."""
  m, total = config.model, 0.0
  for part in step_parts(config, task):
    length = part.slot + int(task.output_length(part.slot))
    per_token = m.num_layers * (8 * m.model_dim**2 + 4 * m.mlp_ratio * m.model_dim**2 + 4 * length * m.model_dim)
    total += 3.0 * per_token * length * part.examples
  return total


def time_training(config, task, training, num_seeds: int, vmap_width: int, settings: Settings) -> tuple[dict, object]:
  """({steps_per_s (per seed), tokens_per_s (per seed), xla_flops_per_step, compile_s,
  compilations}, final state), timed over `repeats` calls after the first."""
  config = copy.deepcopy(config)
  config.num_seeds, config.train.vmap_seeds, config.train.steps_per_call = num_seeds, vmap_width, settings.steps_per_call
  compilations = collections.Counter()
  call = experiment.make_train_chunk_fn(config, training, compilations)  # As a run compiles it.
  keys = jax.random.split(jax.random.key(config.seed), num_seeds)
  state = jax.jit(jax.vmap(training.init))(keys)
  tokens = []

  def one_call():
    nonlocal state
    state, metrics = jax.block_until_ready(call(state, keys))
    tokens.append(float(np.mean(metrics['tokens'])))

  first_s = seconds(one_call)
  call_s = median_seconds(one_call, settings.repeats)
  # The executable is cached: this neither traces nor compiles again. XLA counts the body
  # of the scan (one step) once.
  flops = call.lower(state, keys).compile().cost_analysis()['flops']
  return {
      'steps_per_s': settings.steps_per_call / call_s,
      'tokens_per_s': statistics.mean(tokens[1:]) * settings.steps_per_call / call_s,
      'xla_flops_per_step': flops / num_seeds,
      'compile_s': first_s - call_s,
      'compilations': compilations['train'],
  }, state


def time_evaluation(config, task, graphdef, params, settings: Settings) -> dict:
  """{eval_s, eval_compile_s, eval_compilations} of evaluating every length of the range
  for one model (`params` with a leading seed axis of 1), as `experiment.evaluate` does."""
  config = copy.deepcopy(config)
  config.num_seeds, config.eval.batch_size = 1, settings.eval_batch
  compilations = collections.Counter()
  bucket_eval = experiment.make_bucket_eval_fn(config, task, graphdef, compilations)
  low, high = settings.eval_lengths
  compile_s = run_s = 0.0
  for slot, lengths in evaluation.length_buckets(max(low, task.min_length), high):
    lengths = jnp.asarray(lengths, jnp.int32)
    start = time.perf_counter()
    compiled = bucket_eval.lower(params, lengths, slot).compile()
    compile_s += time.perf_counter() - start
    run_s += seconds(lambda c=compiled, n=lengths: jax.block_until_ready(c(params, n)))
    logging.info('evaluated lengths %d..%d (slot %d): %.1f s so far', lengths[0], lengths[-1], slot, compile_s + run_s)
  return {'eval_s': compile_s + run_s, 'eval_compile_s': compile_s, 'eval_compilations': compilations['eval']}


def forward_inputs(task, length: int, batch: int) -> dict:
  """Random sequences of `length` real tokens, positions 0..T-1, logits at the last."""
  rng = np.random.default_rng(0)
  return {
      'tokens': rng.integers(0, task.input_vocab_size, (batch, length), dtype=np.int32),
      'positions': np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length)),
      'valid': np.ones((batch, length), bool),
      'answer_index': np.full((batch, 1), length - 1, np.int32),
  }


def time_forward(graphdef, params, inputs: dict, num_heads: int, configured_budget: int,
                 repeats: int) -> tuple[float, int]:
  """(tokens/s, XLA's memory bytes) of the jitted model on `inputs`, in micro-batches and
  query blocks within the evaluation's logit budget (`evaluation.forward_in_blocks`,
  `evaluation.model_logit_budget`)."""

  def forward_fn(params, *args):
    model = nnx.merge(graphdef, params)
    budget = evaluation.model_logit_budget(model, configured_budget)
    return evaluation.forward_in_blocks(model, *args, num_heads, budget)

  forward = jax.jit(forward_fn)
  args = [inputs[k] for k in ('tokens', 'positions', 'valid', 'answer_index')]
  compiled = forward.lower(params, *args).compile()
  memory = compiled.memory_analysis()
  jax.block_until_ready(compiled(params, *args))
  call_s = median_seconds(lambda: jax.block_until_ready(compiled(params, *args)), repeats)
  used = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
  return inputs['tokens'].size / call_s, used


def training_batches(config, task, count: int) -> list[list[dict]]:
  """`count` training steps' batches for the PyTorch twin, each a list of parts as numpy
  arrays, drawn as the JAX step draws them (see `train_step.make_train_step`): both
  frameworks train on the same shapes."""
  min_length = max(config.train.min_length, task.min_length)
  sampler = make_sampler(config.encoding.positions, training=True)

  @functools.partial(jax.jit, static_argnums=1)
  def draw(key, part: train_step.LengthPart):
    k_length, k_batch, k_positions = jax.random.split(key, 3)
    batch = task.sample(k_batch, part.examples, train_step.part_lengths(k_length, part, min_length), part.slot)
    seq = layout(batch, task.input_vocab_size)
    positions = sampler(k_positions, jnp.sum(seq.valid, -1), seq.tokens.shape[1])
    return {'tokens': seq.tokens, 'positions': positions, 'valid': seq.valid, 'answer_index': seq.answer_index,
            'targets': batch.targets, 'loss_mask': batch.loss_mask}

  keys = jax.random.split(jax.random.key(config.seed), (count, len(step_parts(config, task))))
  return [[jax.device_get(draw(key, part)) for key, part in zip(step_keys, step_parts(config, task), strict=True)]
          for step_keys in keys]


def measure_jax(config, task, settings: Settings, peak: float) -> tuple[dict, dict]:
  """(the JAX column, what the PyTorch column needs: the eval graph and one seed's params)."""
  training = train_step.training_from_config(config, task)
  logging.info('training, 1 seed')
  train, state = time_training(config, task, training, 1, 1, settings)
  logging.info('training, %d seeds vmapped', settings.seeds)
  vmapped, _ = time_training(config, task, training, settings.seeds, settings.seeds, settings)
  logging.info('training, %d seeds in a loop', settings.seeds)
  looped, _ = time_training(config, task, training, settings.seeds, 1, settings)
  graphdef, _ = nnx.split(nnx.view(training.abstract, deterministic=True))
  params = jax.tree.map(lambda x: x[0], state.params)
  logging.info('evaluation')
  column = {
      'train_steps_per_s': train['steps_per_s'],
      'train_tokens_per_s': train['tokens_per_s'],
      'train_gflop_per_step_xla': train['xla_flops_per_step'] / 1e9,
      'train_gflop_per_step_analytic': analytic_step_flops(config, task) / 1e9,
      'train_gflop_per_s': train['xla_flops_per_step'] * train['steps_per_s'] / 1e9,
      'train_peak_share': train['xla_flops_per_step'] * train['steps_per_s'] / peak,
      'train_compile_s': train['compile_s'],
      'train_compilations': train['compilations'],
      'seeds_model_steps_per_s': vmapped['steps_per_s'] * settings.seeds,
      'seeds_throughput_ratio': vmapped['steps_per_s'] * settings.seeds / train['steps_per_s'],
      'seeds_loop_throughput_ratio': looped['steps_per_s'] * settings.seeds / train['steps_per_s'],
      **time_evaluation(config, task, graphdef, state.params, settings),
  }
  for length in settings.forward_lengths:
    logging.info('forward, T=%d', length)
    tokens_per_s, memory = time_forward(graphdef, params, forward_inputs(task, length, settings.forward_batch),
                                        config.model.num_heads, config.eval.logit_budget,
                                        settings.repeats)
    column[f'forward_tokens_per_s_{length}'] = tokens_per_s
    column[f'forward_memory_mb_{length}'] = memory / 2**20
  column['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  if (stats := jax.devices()[0].memory_stats()) and jax.default_backend() != 'cpu':
    column['device_peak_mb'] = stats['peak_bytes_in_use'] / 2**20
  return column, {'graphdef': graphdef, 'params': params}


def measure_torch(twin, config, task, graphdef, params, settings: Settings) -> dict:
  """The PyTorch column: the twin with the JAX model's parameters (its logits must match),
  trained eagerly in as many calls of as many steps as the JAX column, on batches of the
  same shapes, on the device JAX uses (CUDA or the CPU)."""
  import torch  # Optional: only when the twin is used.

  device = 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'
  if device == 'cpu':
    torch.set_num_threads(_TORCH_THREADS.value or os.cpu_count())

  def synchronized(fn):
    """fn, then a wait for the GPU's queued work, so that a wall time covers it."""
    def call():
      fn()
      if device == 'cuda':
        torch.cuda.synchronize()
    return call

  model = twin.Transformer(config, task)
  twin.load_flax_params(model, params)
  model.to(device)
  batches = training_batches(config, task, settings.steps_per_call * (settings.repeats + 1))
  column = {'twin_max_logit_diff': logit_difference(twin, model, graphdef, params, batches[0][-1], device)}
  torch.set_float32_matmul_precision('high' if device == 'cuda' else 'highest')  # As JAX's default.
  with torch.no_grad():
    for length in settings.forward_lengths:
      inputs = twin.to_torch(forward_inputs(task, length, settings.forward_batch), device)
      synchronized(lambda x=inputs: model(**x))()
      column[f'forward_tokens_per_s_{length}'] = inputs['tokens'].numel() / median_seconds(
          synchronized(lambda x=inputs: model(**x)), settings.repeats)
  torch_step = twin.make_train_step(model, config.train)
  steps = [[twin.to_torch(part, device) for part in parts] for parts in batches]
  calls = [steps[i:i + settings.steps_per_call] for i in range(0, len(steps), settings.steps_per_call)]
  run = lambda call: [torch_step(parts) for parts in call]  # noqa: E731
  synchronized(functools.partial(run, calls[0]))()  # A warm-up, as the JAX column's first call.
  call_s = statistics.median(seconds(synchronized(functools.partial(run, call))) for call in calls[1:])
  column['train_steps_per_s'] = settings.steps_per_call / call_s
  tokens_per_step = statistics.mean(sum(float(part['valid'].sum()) for part in parts) for parts in batches)
  column['train_tokens_per_s'] = tokens_per_step * column['train_steps_per_s']
  return column


def logit_difference(twin, model, graphdef, params, batch: dict, device: str, tolerance: float = 1e-4) -> float:
  """Max |JAX logits - PyTorch logits| on `batch`, both at full float32 matmul precision;
  raises if above `tolerance` (relative to the logits' scale): the twin must be the same
  model."""
  import torch

  keys = ('tokens', 'positions', 'valid', 'answer_index')
  with jax.default_matmul_precision('float32'):
    expected = np.asarray(nnx.merge(graphdef, params)(*(batch[k] for k in keys)))
  inputs = twin.to_torch({k: batch[k] for k in keys}, device)
  torch.set_float32_matmul_precision('highest')
  with torch.no_grad():
    got = model(**inputs).cpu().numpy()
  difference = float(np.max(np.abs(got - expected)))
  if difference > tolerance * max(1.0, float(np.max(np.abs(expected)))):
    raise AssertionError(f'the PyTorch twin is not the JAX model: logits differ by up to {difference:.2e}')
  return difference


def import_twin():
  """The torch_twin module, or None when --torch=false or (auto) PyTorch is missing."""
  if _TORCH.value == 'false':
    return None
  try:
    import torch_twin  # scripts/torch_twin.py, next to this file.
  except ImportError:
    if _TORCH.value == 'true':
      raise
    return None
  return torch_twin


def rows(settings: Settings, with_torch: bool) -> list[tuple[str, str, str]]:
  """(key, label, format) of each table row."""
  low, high = settings.eval_lengths
  result = [
      ('matmul_peak_gflop_per_s', f'matmul peak GFLOP/s (f32 {matmul_size()}^2)', '{:.1f}'),
      ('train_steps_per_s', 'train steps/s (1 seed)', '{:.2f}'),
      ('train_tokens_per_s', 'train tokens/s', '{:,.0f}'),
      ('train_gflop_per_step_xla', 'train GFLOP/step, XLA count', '{:.2f}'),
      ('train_gflop_per_step_analytic', 'train GFLOP/step, analytic (matmuls)', '{:.2f}'),
      ('train_gflop_per_s', 'train GFLOP/s achieved (XLA count)', '{:.1f}'),
      ('train_peak_share', 'train share of matmul peak', '{:.1%}'),
      ('train_compile_s', 'train compile s', '{:.1f}'),
      ('train_compilations', 'train compilations', '{}'),
      ('seeds_model_steps_per_s', f'{settings.seeds} seeds vmapped: model-steps/s', '{:.2f}'),
      ('seeds_throughput_ratio', f'{settings.seeds} seeds vmapped / 1 seed throughput', '{:.2f}'),
      ('seeds_loop_throughput_ratio', f'{settings.seeds} seeds in a loop (vmap_seeds=1) / 1 seed throughput',
       '{:.2f}'),
      ('eval_s', f'eval {low}..{high} x {settings.eval_batch}: total s', '{:.1f}'),
      ('eval_compile_s', 'eval compile s', '{:.1f}'),
      ('eval_compilations', 'eval compilations', '{}'),
  ]
  for length in settings.forward_lengths:
    result.append((f'forward_tokens_per_s_{length}', f'forward tokens/s, T={length} x {settings.forward_batch}',
                   '{:,.0f}'))
  for length in settings.forward_lengths:
    result.append((f'forward_memory_mb_{length}', f'forward XLA memory MB, T={length}', '{:,.0f}'))
  result.append(('peak_rss_mb', 'process peak RSS MB', '{:,.0f}'))
  if jax.default_backend() != 'cpu':
    result.append(('device_peak_mb', 'device peak memory MB', '{:,.0f}'))
  if with_torch:
    result.append(('twin_max_logit_diff', 'PyTorch twin max logit difference', '{:.1e}'))
  return result


def markdown_table(results: dict, settings: Settings) -> str:
  """Rows: metrics; per model a JAX column, then PyTorch and JAX / PyTorch if timed."""
  header, keys = ['metric'], []
  for name, result in results.items():
    header.append(name)
    keys.append((result['jax'], None))
    if result['torch'] is not None:
      header += [f'{name} torch', f'{name} JAX/torch']
      keys += [(result['torch'], None), (result['jax'], result['torch'])]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  with_torch = any(result['torch'] is not None for result in results.values())
  for key, label, form in rows(settings, with_torch):
    cells = []
    for numerator, denominator in keys:
      value = numerator.get(key)
      if denominator is not None:
        ratio = value is not None and denominator.get(key) is not None and key != 'twin_max_logit_diff'
        cells.append(f'{value / denominator[key]:.2f}' if ratio else '')
      else:
        cells.append('' if value is None else form.format(value))
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def machine_stamp(twin) -> dict:
  """Where and how the numbers were measured: date, command, CPU (or device), memory,
  allocator and the versions that matter."""
  import importlib.metadata  # noqa: PLC0415
  import platform  # noqa: PLC0415
  import sys  # noqa: PLC0415

  try:
    cpu = next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name'))
  except (OSError, StopIteration):
    cpu = platform.processor() or platform.machine()
  versions = {'python': platform.python_version(),
              **{name: importlib.metadata.version(name) for name in ('jax', 'jaxlib', 'flax', 'optax')}}
  if twin is not None:
    versions['torch'] = twin.torch.__version__
  return {
      'date': time.strftime('%Y-%m-%d %H:%M %Z'),
      'command': ' '.join(['python', 'scripts/benchmark.py', *sys.argv[1:]]),
      'cpu': f'{cpu}, {os.cpu_count()} cores, {os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30:.0f} GiB',
      'device': f'{jax.devices()[0].device_kind} ({jax.default_backend()})',
      'allocator': os.path.basename(os.environ.get('LD_PRELOAD', '').split(':')[0]) or 'glibc malloc',
      'versions': versions,
  }


def stamped_markdown(stamp: dict, table: str) -> str:
  """The table under the lines that say where it comes from."""
  versions = ', '.join(f'{name} {version}' for name, version in stamp['versions'].items())
  return '\n'.join([f"Measured {stamp['date']} on {stamp['cpu']}; device {stamp['device']}; allocator "
                    f"{stamp['allocator']}; {versions}.", '', f"    {stamp['command']}", '', table, ''])


def main(argv):
  del argv
  settings = settings_from_flags()
  configs = model_configs()
  twin = import_twin()
  peak = matmul_peak_flops(matmul_size())
  results, jax_models = {}, {}
  for name, config in configs.items():
    logging.info('JAX, model %s', name)
    task = validate(config)
    column, jax_models[name] = measure_jax(config, task, settings, peak)
    results[name] = {'jax': {'matmul_peak_gflop_per_s': peak / 1e9, **column}, 'torch': None, 'torch_skipped': None}
  # PyTorch after all JAX timings: its spinning OpenMP threads would otherwise compete with XLA's.
  for name, config in configs.items():
    reason = 'PyTorch not used' if twin is None else twin.unsupported(config)
    if reason:
      results[name]['torch_skipped'] = reason
      continue
    logging.info('PyTorch, model %s', name)
    results[name]['torch'] = measure_torch(twin, config, validate(config), **jax_models[name], settings=settings)
  versions = f'jax {jax.__version__}' + ('' if twin is None else f', torch {twin.torch.__version__}, '
                                          f'{twin.torch.get_num_threads()} threads')
  print(f'{jax.devices()[0].device_kind} x {os.cpu_count()} cores, {versions}; {settings}')
  for name, result in results.items():
    if result['torch_skipped']:
      print(f'{name}: no PyTorch column ({result["torch_skipped"]})')
  table, stamp = markdown_table(results, settings), machine_stamp(twin)
  print(table)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump({'machine': stamp, 'settings': dataclasses.asdict(settings), 'models': results}, f, indent=1)
  if _MARKDOWN_OUT.value:
    with open(_MARKDOWN_OUT.value, 'w') as f:
      f.write(stamped_markdown(stamp, table))


if __name__ == '__main__':
  app.run(main)
