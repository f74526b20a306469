"""The task interface: a pure, jittable generator of (input, answer) examples.

A task draws examples of a given input length `length` inside a static slot of
`max_length` tokens, so that one compiled function serves every length up to the slot
size (`length` may be a traced array). Each example is made by `sample_example` from its
own key; `sample` vmaps it over the batch. Nothing runs on the host at sample time.

The model sees the input followed by `output_length(length)` answer placeholders and
predicts the answer at those placeholders (Deletang et al. 2023); see
`pe_research.model.readout`.
"""

import abc
import dataclasses
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp


class Batch(flax.struct.PyTreeNode):
  """A batch of examples, padded to static slots.

  Attributes:
    inputs: int32[B, max_length], input tokens in [0, input_vocab_size); entries at and
      after `lengths` are padding (zero).
    lengths: int32[B], the input length of each example.
    output_lengths: int32[B], the number of answer slots of each example.
    targets: int32[B, max_output_length], answer tokens in [0, output_vocab_size).
    loss_mask: bool[B, max_output_length], the answer tokens that are scored (trained on
      and counted in accuracy); False on padding and after a terminator.
  """

  inputs: jax.Array
  lengths: jax.Array
  output_lengths: jax.Array
  targets: jax.Array
  loss_mask: jax.Array


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
  """A length-generalization task. Subclasses set the class variables and implement
  `output_length` and `sample_example`; hyperparameters (vocabulary size, modulus) are
  dataclass fields with the paper's values as defaults."""

  name: ClassVar[str]
  # Chomsky level or family: 'regular', 'context_free', 'context_sensitive' or 'classic'.
  level: ClassVar[str]
  # The shortest input length the task can make.
  min_length: ClassVar[int] = 1
  # Input tokens that are digits of a number (for Abacus position ids); empty if none.
  digit_tokens: ClassVar[tuple[int, ...]] = ()

  @property
  @abc.abstractmethod
  def input_vocab_size(self) -> int:
    """Number of distinct input tokens."""

  @property
  @abc.abstractmethod
  def output_vocab_size(self) -> int:
    """Number of distinct answer tokens."""

  @property
  @abc.abstractmethod
  def chance_accuracy(self) -> float:
    """Expected token accuracy of the best input-blind guess (drawn on reports)."""

  @abc.abstractmethod
  def output_length(self, length):
    """Answer slots for an input of `length` tokens (int or int array, nondecreasing)."""

  @abc.abstractmethod
  def sample_example(self, key: jax.Array, length: jax.Array, max_length: int):
    """One example of input length `length` (traced int32) in a slot of `max_length`.

    Returns (inputs int32[max_length], targets int32[output_length(max_length)],
    loss_mask bool[output_length(max_length)]); inputs at and after `length` are zero and
    the mask is False from `output_length(length)` on.
    """

  def check_length(self, length: int, max_length: int | None = None) -> None:
    """Raises ValueError for a length this task cannot make."""
    if length < self.min_length:
      raise ValueError(
          f'task {self.name!r} cannot make inputs of length {length}: '
          f'its minimum length is {self.min_length}'
      )
    if max_length is not None and length > max_length:
      raise ValueError(f'length {length} exceeds the slot size max_length={max_length}')

  def sample(self, key: jax.Array, batch_size: int, length, max_length: int | None = None) -> Batch:
    """Draws `batch_size` examples of input length `length` (int, or int32 scalar or [B]
    array, possibly traced) padded to `max_length` (static; defaults to `length`)."""
    if max_length is None:
      max_length = int(length)
    if isinstance(length, int):
      self.check_length(length, max_length)
    else:
      self.check_length(max_length)
    lengths = jnp.broadcast_to(jnp.asarray(length, jnp.int32), (batch_size,))
    keys = jax.random.split(key, batch_size)
    inputs, targets, loss_mask = jax.vmap(self.sample_example, in_axes=(0, 0, None))(
        keys, lengths, max_length
    )
    output_lengths = jnp.asarray(self.output_length(lengths), jnp.int32)
    loss_mask = loss_mask & (jnp.arange(targets.shape[1]) < output_lengths[:, None])
    return Batch(
        inputs=jnp.where(jnp.arange(max_length) < lengths[:, None], inputs, 0).astype(jnp.int32),
        lengths=lengths,
        output_lengths=output_lengths,
        targets=targets.astype(jnp.int32),
        loss_mask=loss_mask,
    )


@dataclasses.dataclass(frozen=True)
class SingleAnswerTask(Task):
  """A task answered by one token (a classification of the whole input)."""

  def output_length(self, length):
    return length * 0 + 1  # 1, as an int or as an array shaped like `length`


@dataclasses.dataclass(frozen=True)
class ModularTask(SingleAnswerTask):
  """A task over digits 0..modulus-1 whose answer is one residue mod `modulus` (paper: 5);
  its chance accuracy is a uniform guess."""

  modulus: int = 5

  @property
  def digit_tokens(self):
    return tuple(range(self.modulus))

  @property
  def output_vocab_size(self):
    return self.modulus

  @property
  def chance_accuracy(self):
    return 1 / self.modulus


@dataclasses.dataclass(frozen=True)
class SymbolTask(Task):
  """A task whose input and answer are strings over the same `vocab_size` symbols; its
  chance accuracy is a uniform guess."""

  vocab_size: int = 2

  @property
  def input_vocab_size(self):
    return self.vocab_size

  @property
  def output_vocab_size(self):
    return self.vocab_size

  @property
  def chance_accuracy(self):
    return 1 / self.vocab_size


def random_tokens(key: jax.Array, vocab_size: int, max_length: int) -> jax.Array:
  """int32[max_length] i.i.d. uniform tokens in [0, vocab_size)."""
  return jax.random.randint(key, (max_length,), 0, vocab_size, dtype=jnp.int32)


def scatter_or_drop(operand: jax.Array, index: jax.Array, updates, method: str = 'set') -> jax.Array:
  """`operand.at[index].<method>(updates)` for a 1-D operand, where an index >= len(operand)
  drops its update. The dropped updates go to one sentinel slot past the end, sliced off,
  so every index the scatter sees is in bounds: XLA's own dropping of out-of-bounds
  indices is not honoured on every backend (on a GPU, jax 0.11.2, under vmap such updates
  landed in the next row)."""
  size = operand.shape[0]
  with_sentinel = jnp.concatenate([operand, operand[:1]])
  at = with_sentinel.at[jnp.minimum(index, size)]
  return getattr(at, method)(updates, mode='promise_in_bounds')[:size]
