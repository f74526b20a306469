"""The pure, compiled training step and its multi-step, multi-seed wrappers.

Following the Flax NNX performance guide for small models, the model is split once into a
static graph definition and a parameter pytree; the step merges them inside `jax.jit`. The
batch is generated inside the step from a key, with input lengths drawn per example from
[min_length, max_length] and padded to one static slot, so training compiles once.
`steps_per_call` steps are fused with `lax.scan`, and seeds are a leading `vmap` axis.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.nnx as nnx
import flax.struct
import jax
import jax.numpy as jnp
import optax

from pe_research.model.build import build_model
from pe_research.model.readout import layout
from pe_research.positions import PositionSampler, make_sampler
from pe_research.tasks.base import Task
from pe_research.training.metrics import accuracies, masked_cross_entropy
from pe_research.training.optimizer import make_optimizer


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


def make_train_step(graphdef, optimizer, task: Task, sampler: PositionSampler, train_config, stochastic: bool):
  """train_step(state, data_key) -> (state, metrics): one optimizer step on a fresh batch
  drawn from fold_in(data_key, state.step). `stochastic`: the model draws randomness at
  training (dropout, Abacus offsets), so it is given a key."""
  min_length = max(train_config.min_length, task.min_length)
  max_length, batch_size = train_config.max_length, train_config.batch_size

  def train_step(state: TrainState, data_key: jax.Array):
    k_length, k_batch, k_positions, k_dropout = jax.random.split(jax.random.fold_in(data_key, state.step), 4)
    lengths = jax.random.randint(k_length, (batch_size,), min_length, max_length + 1)
    batch = task.sample(k_batch, batch_size, lengths, max_length)
    seq = layout(batch, task.input_vocab_size)
    positions = sampler(k_positions, jnp.sum(seq.valid, -1), seq.tokens.shape[1])

    def loss_fn(params):
      model = nnx.merge(graphdef, params)
      logits = model(seq.tokens, positions, seq.valid, seq.answer_index, k_dropout if stochastic else None)
      return masked_cross_entropy(logits, batch.targets, batch.loss_mask), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    token_accuracy, sequence_accuracy = accuracies(logits, batch.targets, batch.loss_mask)
    metrics = {'loss': loss, 'token_accuracy': token_accuracy, 'sequence_accuracy': sequence_accuracy}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_train_chunk(train_step, steps_per_call: int):
  """chunk(state, data_key) -> (state, metrics averaged over `steps_per_call` steps)."""

  def chunk(state, data_key):
    state, metrics = jax.lax.scan(lambda s, _: train_step(s, data_key), state, length=steps_per_call)
    return state, jax.tree.map(jnp.mean, metrics)

  return chunk


class Training(NamedTuple):
  """What a config's training needs, built once: `init(init_key) -> TrainState` and the
  pure `step(state, data_key)`; `abstract` is the model's shape-only instance (for its
  evaluation view)."""

  abstract: nnx.Module
  init: Callable[[jax.Array], TrainState]
  step: Callable


def training_from_config(config, task: Task) -> Training:
  """The model, optimizer, position sampler and train step that `config` describes."""
  make_model = functools.partial(build_model, config, task)
  abstract = nnx.eval_shape(lambda: make_model(nnx.Rngs(0)))
  graphdef, _ = nnx.split(abstract)
  optimizer = make_optimizer(config.train)
  sampler = make_sampler(config.encoding.positions, training=True)
  stochastic = config.model.dropout > 0 or config.encoding.abacus.enabled
  return Training(
      abstract=abstract,
      init=functools.partial(init_state, make_model, optimizer),
      step=make_train_step(graphdef, optimizer, task, sampler, config.train, stochastic),
  )
