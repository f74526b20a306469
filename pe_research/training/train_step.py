"""The pure, compiled training step and its multi-step, multi-seed wrappers.

Following the Flax NNX performance guide for small models, the model is split once into a
static graph definition and a parameter pytree; the step merges them inside `jax.jit`. The
batch is generated inside the step from a key, so training compiles once.
`steps_per_call` steps are fused with `lax.scan`, and seeds are a leading axis (vmapped or
looped over, `sharding.over_seeds`).

Length parts: a batch padded to max_length wastes about half its compute when lengths
are uniform on 1..max_length. So each batch is cut into `train.length_parts` parts of
nearly equal size, part j covering a contiguous stretch of lengths and padded only to its
longest (`length_parts`). The parts split the length range as quantiles: think of the N
lengths as the interval [0, N), cut at c_j = N (n_1 + ... + n_j) / B for parts of n_j of
the B examples; part j draws u uniformly in [c_(j-1), c_j) and takes length
min_length + floor(u). A random example of the batch thus has a length exactly uniform on
min_length..max_length, as the config says, every step sees every length, and the cost of a
step follows the mean length (for 1..40 and 4 parts the mean padded length is 25, not 40).
The loss and metrics are summed over the parts, so the step is one mean over the batch.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import flax.nnx as nnx
import flax.struct
import jax
import jax.numpy as jnp
import optax

from pe_research.encodings import Abacus, encoding_factory
from pe_research.model.build import build_model
from pe_research.model.readout import layout
from pe_research.model.transformer import Transformer
from pe_research.positions import PositionSampler, make_sampler, position_bound
from pe_research.tasks.base import Task
from pe_research.training.metrics import answer_totals, rates
from pe_research.training.optimizer import make_optimizer
from pe_research.training.sharding import batch_constraint


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training. The data stream is a pure function of
  (data_key, step), so this state plus the seed's key resumes training exactly."""

  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState


def init_state(make_model, optimizer: optax.GradientTransformation, init_key: jax.Array) -> TrainState:
  """Fresh parameters from `make_model(nnx.Rngs(init_key))` and optimizer state."""
  _, params = nnx.split(make_model(nnx.Rngs(init_key)))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


class LengthPart(NamedTuple):
  """`examples` of a batch with lengths min_length + floor(u), u uniform in [start, stop)
  (quantiles of the length range), padded to `slot`, the longest such length."""

  examples: int
  start: float
  stop: float
  slot: int


def length_parts(min_length: int, max_length: int, batch_size: int, count: int) -> list[LengthPart]:
  """The batch cut into `count` parts (at most one per length and per example), shortest
  lengths first; see the module docstring."""
  lengths = max_length - min_length + 1
  count = min(count, lengths, batch_size)
  sizes = [batch_size // count + (j < batch_size % count) for j in range(count)]
  ends = [sum(sizes[:j]) for j in range(count + 1)]
  return [
      LengthPart(size, lengths * low / batch_size, lengths * high / batch_size,
                 min_length + math.ceil(lengths * high / batch_size) - 1)
      for size, low, high in zip(sizes, ends, ends[1:])
  ]


def part_lengths(key: jax.Array, part: LengthPart, min_length: int) -> jax.Array:
  """int32[part.examples] lengths min_length + floor(u), u uniform on [part.start, part.stop)."""
  u = jax.random.uniform(key, (part.examples,), minval=part.start, maxval=part.stop)
  # Float rounding may land u on `stop`: clip to the part's own lengths.
  return jnp.clip(min_length + jnp.floor(u).astype(jnp.int32), min_length + math.floor(part.start), part.slot)


def make_train_step(graphdef, optimizer, task: Task, sampler: PositionSampler, train_config, stochastic: bool,
                    constrain=lambda x: x):
  """train_step(state, data_key) -> (state, metrics): one optimizer step on a fresh batch
  drawn from fold_in(data_key, state.step), in length parts. `stochastic`: the model draws
  randomness at training (dropout, Abacus offsets), so it is given a key. `constrain` places
  each generated array (see `sharding.batch_constraint`). Metrics: loss, accuracies, and
  `tokens`, the real (unpadded) input and answer tokens of the batch."""
  min_length = max(train_config.min_length, task.min_length)
  parts = length_parts(min_length, train_config.max_length, train_config.batch_size, train_config.length_parts)

  def part_inputs(part: LengthPart, key: jax.Array):
    k_length, k_batch, k_positions = jax.random.split(key, 3)
    batch = task.sample(k_batch, part.examples, part_lengths(k_length, part, min_length), part.slot)
    seq = layout(batch, task.input_vocab_size)
    positions = sampler(k_positions, jnp.sum(seq.valid, -1), seq.tokens.shape[1])
    return jax.tree.map(constrain, (batch, seq, positions))

  def train_step(state: TrainState, data_key: jax.Array):
    *part_keys, k_dropout = jax.random.split(jax.random.fold_in(data_key, state.step), len(parts) + 1)
    inputs = [part_inputs(part, key) for part, key in zip(parts, part_keys)]

    def loss_fn(params):
      model = nnx.merge(graphdef, params)
      totals = []
      for j, (batch, seq, positions) in enumerate(inputs):
        logits = model(seq.tokens, positions, seq.valid, seq.answer_index,
                       jax.random.fold_in(k_dropout, j) if stochastic else None)
        totals.append(answer_totals(logits, batch.targets, batch.loss_mask))
      total = jax.tree.map(lambda *xs: sum(xs), *totals)
      return rates(total)['loss'], total

    (_, totals), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    tokens = sum(jnp.sum(seq.valid) for _, seq, _ in inputs).astype(jnp.float32)
    metrics = {**rates(totals), 'tokens': tokens}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def all_finite(state: TrainState) -> jax.Array:
  """Whether every parameter and optimizer moment of `state` is finite (a bool scalar)."""
  leaves = [x for x in jax.tree.leaves((state.params, state.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def make_train_chunk(train_step, steps_per_call: int):
  """chunk(state, data_key) -> (state, metrics averaged over `steps_per_call` steps, and
  `finite`: whether the loss and the whole state are finite after them). The loss alone
  would miss a step whose update made the parameters non-finite (learning_rate=inf)."""

  def chunk(state, data_key):
    state, metrics = jax.lax.scan(lambda s, _: train_step(s, data_key), state, length=steps_per_call)
    metrics = jax.tree.map(jnp.mean, metrics)
    return state, {**metrics, 'finite': jnp.isfinite(metrics['loss']) & all_finite(state)}

  return chunk


class Training(NamedTuple):
  """What a config's training needs, built once: `init(init_key) -> TrainState` and the
  pure `step(state, data_key)`; `abstract` is the model's shape-only instance (for its
  evaluation view)."""

  abstract: nnx.Module
  init: Callable[[jax.Array], TrainState]
  step: Callable


def model_from_config(config, task: Task, rngs: nnx.Rngs) -> Transformer:
  """The model of `config.model` for `task`, with the encoding of `config.encoding` (and
  Abacus ids on top when `config.encoding.abacus.enabled`); its `train_length` is the
  longest training sequence in tokens."""
  longest_train = config.train.max_length + int(task.output_length(config.train.max_length))
  encoding = encoding_factory(config.encoding, position_bound(config.encoding.positions, longest_train))
  abacus = functools.partial(Abacus.from_config, config.encoding) if config.encoding.abacus.enabled else None
  return build_model(task, encoding, rngs, abacus=abacus, train_length=longest_train, **config.model)


def training_from_config(config, task: Task) -> Training:
  """The model, optimizer, position sampler and train step that `config` describes."""
  make_model = functools.partial(model_from_config, config, task)
  abstract = nnx.eval_shape(lambda: make_model(nnx.Rngs(0)))
  graphdef, _ = nnx.split(abstract)
  optimizer = make_optimizer(config.train)
  sampler = make_sampler(config.encoding.positions, training=True)
  stochastic = config.model.dropout > 0 or config.encoding.abacus.enabled
  return Training(
      abstract=abstract,
      init=functools.partial(init_state, make_model, optimizer),
      step=make_train_step(graphdef, optimizer, task, sampler, config.train, stochastic, batch_constraint(config)),
  )
