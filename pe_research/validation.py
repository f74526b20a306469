"""Config validation: every error a run can hit from its config, found before anything
compiles, as one line naming the field, the bad value and what is allowed."""

from pe_research.encodings import ENCODINGS, Abacus
from pe_research.encodings.base import Dims
from pe_research.model.dense import MATMUL_DTYPES
from pe_research.positions import RANDOM_SAMPLERS, SAMPLERS
from pe_research.tasks import TASKS, Task, get_task
from pe_research.training.optimizer import SCHEDULES
from pe_research.training.sharding import SHARD_AXES

POSITIVE_FIELDS = (
    'num_seeds',
    'model.num_layers',
    'model.model_dim',
    'model.num_heads',
    'model.mlp_ratio',
    'train.steps',
    'train.steps_per_call',
    'train.length_buckets',
    'train.batch_size',
    'train.min_length',
    'train.max_length',
    'train.learning_rate',
    'train.grad_clip',
    'eval.max_length',
    'eval.batch_size',
)


def _get(config, field: str):
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def _allowed(names) -> str:
  return ', '.join(sorted(names))


def longest_sequence(config, task: Task) -> int:
  """Most real tokens (input plus answer slots) of any training or evaluation sequence."""
  lengths = (config.train.max_length, config.eval.max_length)
  return max(n + int(task.output_length(n)) for n in lengths)


def validate(config) -> Task:
  """Checks `config` and returns its task; raises ValueError naming the bad field."""
  for field in POSITIVE_FIELDS:
    value = _get(config, field)
    if not value > 0:
      raise ValueError(f'config.{field}={value!r} must be positive')
  if config.task.name not in TASKS:
    raise ValueError(f'config.task.name={config.task.name!r} is unknown; allowed: {_allowed(TASKS)}')
  if config.encoding.name not in ENCODINGS:
    raise ValueError(f'config.encoding.name={config.encoding.name!r} is unknown; allowed: {_allowed(ENCODINGS)}')
  if config.encoding.positions.sampler not in SAMPLERS:
    raise ValueError(
        f'config.encoding.positions.sampler={config.encoding.positions.sampler!r} is unknown; '
        f'allowed: {_allowed(SAMPLERS)}'
    )
  m, t = config.model, config.train
  if m.model_dim % m.num_heads:
    raise ValueError(
        f'config.model.num_heads={m.num_heads} does not divide config.model.model_dim={m.model_dim}; '
        f'allowed: a divisor of {m.model_dim}'
    )
  if m.norm not in ('pre', 'post'):
    raise ValueError(f"config.model.norm={m.norm!r} is unknown; allowed: 'post', 'pre'")
  if not 0 <= m.dropout < 1:
    raise ValueError(f'config.model.dropout={m.dropout!r} must be in [0, 1)')
  if m.matmul_dtype not in MATMUL_DTYPES:
    raise ValueError(f'config.model.matmul_dtype={m.matmul_dtype!r} is unknown; allowed: {_allowed(MATMUL_DTYPES)}')
  if t.schedule not in SCHEDULES:
    raise ValueError(f'config.train.schedule={t.schedule!r} is unknown; allowed: {_allowed(SCHEDULES)}')
  if t.warmup_steps < 0:
    raise ValueError(f'config.train.warmup_steps={t.warmup_steps} must be >= 0')
  if t.vmap_seeds < 0:
    raise ValueError(f'config.train.vmap_seeds={t.vmap_seeds} must be >= 0 (0: all seeds)')
  if config.eval.logit_budget < 0:
    raise ValueError(f'config.eval.logit_budget={config.eval.logit_budget} must be >= 0 (0: the platform default)')
  if t.checkpoint_every < 0:
    raise ValueError(f'config.train.checkpoint_every={t.checkpoint_every} must be >= 0 (0: only at the end)')
  if t.steps % t.steps_per_call:
    raise ValueError(
        f'config.train.steps={t.steps} must be a multiple of config.train.steps_per_call={t.steps_per_call}'
    )
  if t.shard not in SHARD_AXES:
    raise ValueError(f'config.train.shard={t.shard!r} is unknown; allowed: {", ".join(map(repr, SHARD_AXES))}')
  if t.min_length > t.max_length:
    raise ValueError(
        f'config.train.min_length={t.min_length} exceeds config.train.max_length={t.max_length}'
    )
  task = get_task(config.task.name)
  for field in ('train.max_length', 'eval.max_length'):
    if _get(config, field) < task.min_length:
      raise ValueError(
          f'config.{field}={_get(config, field)} is shorter than task {task.name!r} can make; '
          f'allowed: >= {task.min_length}'
      )
  dims = Dims(model_dim=m.model_dim, num_heads=m.num_heads, causal=m.causal)
  longest = longest_sequence(config, task)
  positions = config.encoding.positions
  if positions.sampler in RANDOM_SAMPLERS and positions.max_length < longest:
    raise ValueError(
        f'config.encoding.positions.max_length={positions.max_length} is shorter than the longest sequence '
        f'({longest} tokens, input plus answer slots) that sampler {positions.sampler!r} must place in '
        f'[0, max_length); allowed: >= {longest}'
    )
  ENCODINGS[config.encoding.name].check_config(config.encoding, dims, longest)
  Abacus.check_config(config.encoding, task.digit_tokens, longest)
  return task
