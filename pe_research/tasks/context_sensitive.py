"""Context-sensitive tasks (Deletang et al. 2023)."""

import dataclasses

import jax.numpy as jnp

from pe_research.tasks.base import Task, random_tokens


@dataclasses.dataclass(frozen=True)
class DuplicateString(Task):
  """Write a string twice: `s -> s s`.

  Examples: `101 -> 101101`, `0 -> 00`.
  Vocabulary: inputs and answers {0, .., vocab_size-1} (paper: 2). Output length = 2 x
  input length. Minimum length 1. Chance accuracy 1/vocab_size.
  """

  name = 'duplicate_string'
  level = 'context_sensitive'
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

  def output_length(self, length):
    return 2 * length

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    t = jnp.arange(2 * max_length)
    targets = tokens[t % jnp.maximum(length, 1)]
    return tokens, targets, t < 2 * length
