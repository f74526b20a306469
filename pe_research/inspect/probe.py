"""A trained run's model on fixed inputs, its attention weights captured through the seam.

`load(workdir)` restores one seed of a run from its latest checkpoint (under the run's
lock, as `pe_research.evaluate` does) as the evaluation view of its model. `probe` runs it
on a fixed batch per length, every length padded to the longest (one compilation), with
the model viewed as `nnx.view(model, capture_weights=True)`: each attention layer sows the
weights it applied (`MultiHeadAttention`), computed by the same code as the model's
attention (`attend(capture=True)`), and the logits are the model's own. Reading the answer
slots' rows of every layer, it gives per length:
  * the token accuracy of each answer position;
  * the attention entropy -sum_j w_j log w_j (nats) of each layer and head, mean over the
    answer slots and examples, and that of uniform attention over the keys each answer
    slot sees (log n), its ceiling;
  * for a few lengths, the attention maps: each answer slot's weights over the sequence,
    mean over the examples.
The examples are drawn as evaluation draws them: from `eval.seed`, folded with the length,
positions by the run's evaluation sampler.
"""

import os
from typing import NamedTuple

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pe_research import experiment, locking, validation
from pe_research.cli import UsageError
from pe_research.model.readout import layout
from pe_research.model.transformer import Transformer
from pe_research.positions import make_sampler
from pe_research.tasks.base import Task


class RunModel(NamedTuple):
  """One seed of a trained run: its config, task, model (evaluation view), seed and step."""

  config: ml_collections.ConfigDict
  task: Task
  model: Transformer
  seed: int
  step: int

  @property
  def train_length(self) -> int:
    """The longest training sequence in tokens (input plus answer slots)."""
    return self.config.train.max_length + int(self.task.output_length(self.config.train.max_length))


def load(workdir: str, seed: int | None = None) -> RunModel:
  """Seed `seed` (default: the first that did not diverge) of the run in `workdir`, from its
  latest checkpoint; UsageError if there is no run, RunFailed if it has no checkpoint."""
  if not os.path.isfile(os.path.join(workdir, experiment.CONFIG)):
    raise UsageError(f'{workdir} holds no run (no {experiment.CONFIG}); allowed: the workdir of a trained run')
  config = ml_collections.ConfigDict(experiment.stored_config(workdir))
  task = validation.validate(config)
  with locking.hold(workdir):
    trained = experiment.restore_trained(config, task, workdir)
  seeds = [s for s in range(config.seed, config.seed + config.num_seeds) if s not in trained.diverged]
  if seed is None and seeds:
    seed = seeds[0]
  if seed not in seeds:
    raise UsageError(f'--seed={seed}: {workdir} has no such seed that trained; allowed: '
                     f'{", ".join(map(str, seeds)) or "none (every seed diverged)"}')
  index = seed - config.seed
  graphdef, _ = nnx.split(nnx.view(trained.abstract, deterministic=True))
  model = nnx.merge(graphdef, jax.tree.map(lambda x: x[index], trained.params))
  return RunModel(config, task, model, seed, trained.step)


class Probe(NamedTuple):
  """What `probe` measures, per length (leading axis, `lengths`): O answer positions, L
  layers, H heads."""

  lengths: np.ndarray
  accuracy: np.ndarray  # [N, O] token accuracy per answer position; NaN where it has none.
  entropy: np.ndarray  # [N, L, H] mean attention entropy of the answer slots, nats.
  uniform_entropy: np.ndarray  # [N] the same for uniform attention over the keys each slot sees.
  maps: dict  # {length: [L, H, O, T]} mean weights of its O answer slots over its T tokens.
  batch_size: int


def _answer_rows(weights_BxHxTxS: jax.Array, answer_index_BxO: jax.Array) -> jax.Array:
  """[B, H, O, S]: the rows of the answer slots (the last layer sows only those)."""
  if weights_BxHxTxS.shape[2] == answer_index_BxO.shape[1]:
    return weights_BxHxTxS
  return jnp.take_along_axis(weights_BxHxTxS, answer_index_BxO[:, None, :, None], axis=2)


def captured_weights(sown: nnx.State, num_layers: int) -> list[jax.Array]:
  """The weights each layer sowed (`MultiHeadAttention`), first layer first."""
  return [sown['blocks'][i]['attention']['attention_weights'].get_value()[0] for i in range(num_layers)]


def probe(run: RunModel, lengths: list[int], map_lengths: list[int], batch_size: int) -> Probe:
  """Runs the model of `run` on `batch_size` examples of each of `lengths` (module
  docstring); keeps the maps of `map_lengths` (a subset)."""
  task, config = run.task, run.config
  slot = max(lengths)
  sampler = make_sampler(config.encoding.positions, training=False)
  eval_key = jax.random.key(config.eval.seed)
  num_layers = len(run.model.blocks)
  graphdef, params = nnx.split(nnx.view(run.model, capture_weights=True))

  @jax.jit
  def one_length(params, length):
    key = jax.random.fold_in(eval_key, length)
    batch = task.sample(key, batch_size, length, slot)
    seq = layout(batch, task.input_vocab_size)
    positions = sampler(jax.random.fold_in(key, 1), jnp.sum(seq.valid, -1), seq.tokens.shape[1])
    model = nnx.merge(graphdef, params)
    logits, sown = nnx.capture(model, nnx.Intermediate)(seq.tokens, positions, seq.valid, seq.answer_index)
    weights_LxBxHxOxS = jnp.stack([_answer_rows(w, seq.answer_index) for w in captured_weights(sown, num_layers)])
    scored_BxO = batch.loss_mask
    right_O = jnp.sum((jnp.argmax(logits, -1) == batch.targets) & scored_BxO, axis=0)
    accuracy_O = jnp.where(scored_BxO.any(0), right_O / jnp.maximum(scored_BxO.sum(0), 1), jnp.nan)
    slots = jnp.maximum(scored_BxO.sum(), 1)
    plogp = jnp.where(weights_LxBxHxOxS > 0, weights_LxBxHxOxS * jnp.log(weights_LxBxHxOxS), 0.0)
    entropy_LxH = -jnp.einsum('lbhos,bo->lh', plogp, scored_BxO.astype(jnp.float32)) / slots
    # The keys each answer slot sees: the real tokens (up to itself if causal).
    sees_BxOxS = seq.valid[:, None, :] & ((seq.answer_index[:, :, None] >= jnp.arange(seq.tokens.shape[1]))
                                          | (not run.model.causal))
    uniform = jnp.sum(jnp.log(jnp.maximum(sees_BxOxS.sum(-1), 1)) * scored_BxO) / slots
    return accuracy_O, entropy_LxH, uniform, weights_LxBxHxOxS.mean(1)

  accuracy, entropy, uniform, maps = [], [], [], {}
  for length in lengths:
    accuracy_O, entropy_LxH, uniform_entropy, map_LxHxOxS = jax.device_get(one_length(params, length))
    accuracy.append(accuracy_O)
    entropy.append(entropy_LxH)
    uniform.append(uniform_entropy)
    if length in map_lengths:
      outputs = int(task.output_length(length))
      maps[length] = map_LxHxOxS[:, :, :outputs, :length + outputs]
  return Probe(np.asarray(lengths), np.stack(accuracy), np.stack(entropy), np.asarray(uniform), maps, batch_size)
