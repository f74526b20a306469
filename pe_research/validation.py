"""Config validation: every error a run can hit from its config, found in about a second,
before anything compiles, as one line naming the field, the bad value and what is allowed.

One check per constraint, all here: `schema()` gives every field's type and range (every
number finite; no field more, none less, so a misspelt field in a config file is caught as
on the command line), then the constraints between fields, then each encoding checks the
ranges of its own options (`Encoding.check_config`) and Abacus its section; last, sizes that would not
fit: the estimated memory of the largest training and evaluation shapes against the
machine's (`estimated_memory`), and models whose trace would take minutes
(`MAX_LAYER_TRACES`). Errors are `cli.ConfigError`, a ValueError.
"""

import difflib
import math
import os
import re
from typing import NamedTuple

import jax
import ml_collections
from absl import logging

from pe_research.cli import ConfigError, field_line
from pe_research.encodings import ENCODINGS, Abacus, default_config
from pe_research.encodings.base import Dims
from pe_research.model.attention import ATTENTION_SCALES
from pe_research.model.dense import MATMUL_DTYPES
from pe_research.positions import RANDOM_SAMPLERS, SAMPLERS
from pe_research.tasks import TASKS, Task, get_task
from pe_research.training.optimizer import SCHEDULES
from pe_research.training.sharding import SHARD_AXES, seeds_vectorized


class Rule(NamedTuple):
  """What one field allows: a type, and an inclusive range or a set of names."""

  kind: type
  low: float | None = None
  high: float | None = None
  choices: tuple | dict | None = None
  # How the allowed values read in an error, when the range alone would not say it.
  allowed: str = ''


def _ints(low, allowed=''):
  return Rule(int, low, allowed=allowed)


# Floats that must be > 0 (the ranges are inclusive): a floor no sensible value is below.
_POSITIVE = Rule(float, 1e-30, allowed='positive and finite')

FIELDS: dict[str, Rule] = {
    'seed': _ints(0),
    'num_seeds': _ints(1),
    'task.name': Rule(str, choices=TASKS),
    'model.num_layers': _ints(1),
    'model.model_dim': _ints(1),
    'model.num_heads': _ints(1),
    'model.mlp_ratio': _ints(1),
    'model.causal': Rule(bool),
    'model.norm': Rule(str, choices=('pre', 'post')),
    'model.dropout': Rule(float, 0, 1 - 1e-9, allowed='in [0, 1)'),
    'model.matmul_dtype': Rule(str, choices=MATMUL_DTYPES),
    'model.attention_scale': Rule(str, choices=ATTENTION_SCALES),
    'encoding.name': Rule(str, choices=ENCODINGS),
    'encoding.positions.sampler': Rule(str, choices=SAMPLERS),
    'encoding.positions.max_length': _ints(1),
    'encoding.positions.resample_at_eval': Rule(bool),
    'encoding.abacus.enabled': Rule(bool),
    'encoding.abacus.max_k': _ints(0),
    'encoding.abacus.max_length': _ints(1),
    'train.steps': _ints(1),
    'train.steps_per_call': _ints(1),
    'train.batch_size': _ints(1),
    'train.min_length': _ints(1),
    'train.max_length': _ints(1),
    'train.length_parts': _ints(1),
    'train.learning_rate': _POSITIVE,
    'train.schedule': Rule(str, choices=SCHEDULES),
    'train.warmup_steps': _ints(0),
    'train.grad_clip': _POSITIVE,
    'train.checkpoint_every': _ints(0, allowed='>= 0 (0: only at the end)'),
    'train.shard': Rule(str, choices=SHARD_AXES),
    'train.vmap_seeds': _ints(0, allowed='>= 0 (0: all seeds)'),
    'eval.max_length': _ints(1),
    'eval.batch_size': _ints(1),
    'eval.seed': _ints(0),
    'eval.logit_budget': _ints(0, allowed='>= 0 (0: the platform default)'),
}

# Bound on num_layers x train.length_parts, the copies of a block that training traces (a
# few hundredths of a second each on a CPU, so this many take tens of seconds; 100,000
# layers traced for minutes without a word).
MAX_LAYER_TRACES = 512
# Share of the machine's memory a run may be estimated to need.
MEMORY_SHARE = 0.9


def _get(config, field: str):
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def _allowed(names) -> str:
  return ', '.join(sorted(names))


def _check_field(field: str, value, rule: Rule) -> None:
  """ConfigError unless `value` has the rule's type and lies in its range or choices."""
  if rule.choices is not None:
    if not isinstance(value, str) or value not in rule.choices:
      raise ConfigError(f'config.{field}={value!r} is unknown; allowed: {_allowed(rule.choices)}')
    return
  if rule.kind in (bool, str):
    kind_ok = isinstance(value, rule.kind)
  else:  # A bool is an int to Python, never a number here; an int is a valid float.
    kind_ok = isinstance(value, (int, float) if rule.kind is float else int) and not isinstance(value, bool)
  if not kind_ok:
    kind = {int: 'an integer', float: 'a number', bool: 'True or False', str: 'a string'}[rule.kind]
    raise ConfigError(f'config.{field}={value!r} must be {kind}')
  if rule.kind is bool or rule.kind is str:
    return
  low_ok = rule.low is None or value >= rule.low
  high_ok = rule.high is None or value <= rule.high
  if not (math.isfinite(value) and low_ok and high_ok):
    allowed = rule.allowed or ('positive' if rule.low == 1 else f'>= {rule.low}' if rule.low is not None else
                               'finite')
    raise ConfigError(f'config.{field}={value!r} must be {allowed}')


def _flat(config, prefix: str = '') -> dict:
  """{dotted field: value} of a ConfigDict's leaves."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def schema() -> dict[str, Rule]:
  """Every field a config has, and its rule: `FIELDS`, and each registered encoding's
  options as it declares them (`encodings.default_config`), typed by their defaults, any
  number finite (their ranges are each encoding's `check_config`)."""
  options = {f'encoding.{field}': Rule(type(default), allowed='a finite number' if type(default) is float else '')
             for field, default in _flat(default_config()).items()}
  return {**FIELDS, **{field: rule for field, rule in options.items() if field not in FIELDS}}


def _check_fields(config) -> None:
  """A config has exactly the fields of `schema()`, each of its type and in its range: a
  misspelt field in a config file is an error, as on the command line."""
  rules, fields = schema(), _flat(config)
  for field in fields:
    if field not in rules:
      close = difflib.get_close_matches(field, rules, n=1)
      raise ConfigError(f'config.{field} is not a field' + (f'; did you mean {close[0]}?' if close else ''))
  for field, rule in rules.items():
    if field not in fields:
      raise ConfigError(f'config.{field} is missing; a config defines every field of configs/default.py')
    _check_field(field, fields[field], rule)


def _warn_unread_options(config) -> None:
  """A warning (not an error: a sweep's base may set options for some cells' encodings) for
  each option changed from its default in a section the chosen encoding does not read."""
  read = set(ENCODINGS[config.encoding.name].option_sections())
  defaults = _flat(default_config())
  for field, value in _flat(config.encoding).items():
    if field in defaults and field.split('.', 1)[0] not in read | {'abacus'} and value != defaults[field]:
      message = (f'config.encoding.{field}={value!r} is not read: config.encoding.name={config.encoding.name!r} '
                 f'reads {", ".join(f"encoding.{s}" for s in sorted(read)) or "no options"}')
      if message not in _WARNED:  # A config is validated more than once (the command, the run).
        _WARNED.add(message)
        logging.warning(message)


_WARNED: set[str] = set()


def longest_sequence(config, task: Task) -> int:
  """Most real tokens (input plus answer slots) of any training or evaluation sequence."""
  lengths = (config.train.max_length, config.eval.max_length)
  return max(n + int(task.output_length(n)) for n in lengths)


def longest_eval_sequence(config, task: Task) -> int:
  """Most real tokens of any evaluation sequence (its longest length's slot)."""
  from pe_research.evaluation import bucket_slots  # noqa: PLC0415  (evaluation imports the model)

  slot = bucket_slots(config.eval.max_length)[-1]
  return slot + int(task.output_length(slot))


def _parameters(config, task: Task) -> int:
  """Parameters of one model (its position tables included), an estimate within a few %."""
  m = config.model
  d, hidden = m.model_dim, m.mlp_ratio * m.model_dim
  per_layer = 4 * d * d + 2 * d * hidden + hidden + 5 * d + 2 * d * d  # + room for an encoding's own
  tables = config.encoding.abacus.max_length * d if config.encoding.abacus.enabled else 0
  if config.encoding.name == 'learned':
    tables += config.encoding.learned.max_length * d
  return (task.input_vocab_size + 2) * d + m.num_layers * per_layer + (d + 1) * task.output_vocab_size + tables


def estimated_memory(config, task: Task) -> tuple[int, str]:
  """(bytes, what they are) a run needs at its peak, roughly and on the high side: per seed,
  parameters, gradients and Adam's two moments (and a checkpoint's copy), plus the larger
  of the training step's saved activations (every layer of the whole batch at the longest
  training length, with [T, T] logits) and the evaluation's (one micro-batch of the
  longest evaluated sequence, within the logit budget), for the seeds vectorized at once."""
  from pe_research.evaluation import attention_blocks, logit_budget  # noqa: PLC0415

  m, t = config.model, config.train
  state = 24 * _parameters(config, task)  # float32 params, grads, 2 moments, an update and a copy.
  length = t.max_length + int(task.output_length(t.max_length))
  per_layer = t.batch_size * length * (m.model_dim * (8 + 2 * m.mlp_ratio) + 2 * m.num_heads * length)
  train = 4 * m.num_layers * per_layer
  width = seeds_vectorized(config)
  eval_length = longest_eval_sequence(config, task)
  budget = logit_budget(config.eval.logit_budget)
  chunks, query_block = attention_blocks(config.eval.batch_size, eval_length, m.num_heads * width, budget)
  micro = config.eval.batch_size // chunks
  logits = micro * m.num_heads * (query_block or eval_length) * eval_length
  evaluation = 4 * (2 * micro * eval_length * m.model_dim * (4 + m.mlp_ratio) + 2 * logits) + 40 * (
      config.eval.batch_size * eval_length)
  total = state * config.num_seeds + max(train, evaluation) * width
  return total, (f'{_gib(state)} of parameters and optimizer state per seed x {config.num_seeds} seeds, and '
                 f'{_gib(max(train, evaluation))} of activations per model x {width} vectorized')


def _gib(size: float) -> str:
  """`size` bytes in MiB, GiB or TiB."""
  unit = next((u for u in ('TiB', 'GiB') if size >= 2 ** {'TiB': 40, 'GiB': 30}[u]), 'MiB')
  return f'{size / 2 ** {"TiB": 40, "GiB": 30, "MiB": 20}[unit]:.1f} {unit}'


def machine_memory() -> int:
  """Bytes of memory the run's device has: the accelerator's, else the host's RAM."""
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    limit = (device.memory_stats() or {}).get('bytes_limit')
    if limit:
      return int(limit)
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def validate(config) -> Task:
  """Checks `config` and returns its task; raises ConfigError naming the bad field."""
  _check_fields(config)
  m, t = config.model, config.train
  if m.model_dim % m.num_heads:
    raise ConfigError(
        f'config.model.num_heads={m.num_heads} does not divide config.model.model_dim={m.model_dim}; '
        f'allowed: a divisor of {m.model_dim}'
    )
  if t.steps % t.steps_per_call:
    raise ConfigError(
        f'config.train.steps={t.steps} must be a multiple of config.train.steps_per_call={t.steps_per_call}'
    )
  if t.min_length > t.max_length:
    raise ConfigError(f'config.train.min_length={t.min_length} exceeds config.train.max_length={t.max_length}')
  if m.num_layers * t.length_parts > MAX_LAYER_TRACES:
    raise ConfigError(
        f'config.model.num_layers={m.num_layers} x config.train.length_parts={t.length_parts} copies of a '
        f'block would take minutes to trace; allowed: num_layers x length_parts <= {MAX_LAYER_TRACES}'
    )
  task = get_task(config.task.name)
  for field in ('train.max_length', 'eval.max_length'):
    if _get(config, field) < task.min_length:
      raise ConfigError(
          f'config.{field}={_get(config, field)} is shorter than task {task.name!r} can make; '
          f'allowed: >= {task.min_length}'
      )
  dims = Dims(model_dim=m.model_dim, num_heads=m.num_heads, causal=m.causal)
  longest = longest_sequence(config, task)
  positions = config.encoding.positions
  if positions.sampler in RANDOM_SAMPLERS and positions.max_length < longest:
    raise ConfigError(
        f'config.encoding.positions.max_length={positions.max_length} is shorter than the longest sequence '
        f'({longest} tokens, input plus answer slots) that sampler {positions.sampler!r} must place in '
        f'[0, max_length); allowed: >= {longest}'
    )
  one_row = m.num_heads * seeds_vectorized(config) * longest_eval_sequence(config, task)
  if 0 < config.eval.logit_budget < one_row:
    raise ConfigError(
        f'config.eval.logit_budget={config.eval.logit_budget} is below one query row of the longest evaluated '
        f'sequence (heads x seeds vectorized x tokens = {one_row}); allowed: 0 (the platform default) or '
        f'>= {one_row}'
    )
  try:
    ENCODINGS[config.encoding.name].check_config(config.encoding, dims, longest)
    Abacus.check_config(config.encoding, task.digit_tokens, longest)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _warn_unread_options(config)
  needed, parts = estimated_memory(config, task)
  available = machine_memory()
  if needed > MEMORY_SHARE * available:
    raise ConfigError(
        f'the run needs an estimated {_gib(needed)} ({parts}) but this machine has {_gib(available)}; allowed: '
        'a smaller config.num_seeds, model (model.model_dim, num_layers), train.batch_size or eval.batch_size, '
        'or train.vmap_seeds'
    )
  return task


def validate_command_line(config, flag) -> Task:
  """`validate(config)` for a config given as `--config=FILE`: an error in a field the file
  set (not one overridden on the command line) also names the file and line."""
  try:
    return validate(config)
  except ConfigError as e:
    field = re.match(r'config\.([\w.]+)', str(e))
    if field is None or field.group(1) in flag.overridden:
      raise
    raise ConfigError(f'{field_line(flag.config_spec, field.group(1))}: {e}') from None
