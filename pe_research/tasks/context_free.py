"""Deterministic context-free tasks (Deletang et al. 2023)."""

import dataclasses

import jax.numpy as jnp

from pe_research.tasks.base import Task, random_tokens


@dataclasses.dataclass(frozen=True)
class ReverseString(Task):
  """Reverse a string over `vocab_size` symbols.

  Examples: `0111 -> 1110`, `100 -> 001`.
  Vocabulary: inputs and answers {0, .., vocab_size-1} (paper: 2). Output length = input
  length. Minimum length 1. Chance accuracy 1/vocab_size.
  """

  name = 'reverse_string'
  level = 'context_free'
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
    return length

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    t = jnp.arange(max_length)
    targets = tokens[jnp.clip(length - 1 - t, 0, max_length - 1)]
    return tokens, targets, t < length
