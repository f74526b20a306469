"""Context-sensitive tasks (Deletang et al. 2023).

Numbers are binary and little-endian (least significant bit first) in every task here,
as the paper's text says; for compute_sqrt the reference code writes them big-endian.
"""

import dataclasses

import jax
import jax.numpy as jnp

from pe_research.tasks import arithmetic
from pe_research.tasks.base import SingleAnswerTask, SymbolTask, Task, random_tokens


@dataclasses.dataclass(frozen=True)
class DuplicateString(SymbolTask):
  """Write a string twice: `s -> s s`.

  Examples: `101 -> 101101`, `0 -> 00`.
  Vocabulary: inputs and answers {0, .., vocab_size-1} (paper: 2). Output length = 2 x
  input length. Minimum length 1. Chance accuracy 1/vocab_size.
  """

  name = 'duplicate_string'
  level = 'context_sensitive'
  vocab_size: int = 2

  def output_length(self, length):
    return 2 * length

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    t = jnp.arange(2 * max_length)
    targets = tokens[t % jnp.maximum(length, 1)]
    return tokens, targets, t < 2 * length


@dataclasses.dataclass(frozen=True)
class MissingDuplicateString(SingleAnswerTask):
  """A bit string written twice with one symbol replaced by a hole (2): which bit is it?

  Examples: `01100210 -> 1` (ww with w = 0110), `1011213 -> 0` (odd length: w = 101, then
  the pad token 3).
  Vocabulary: inputs {0, 1, hole 2, pad 3}; answer {0, 1}. Output length 1.
  Minimum length 2. Lengths: w has floor(length / 2) bits; an odd length ends with one
  pad token. The hole is uniform over the 2|w| positions. Chance accuracy 1/2.
  """

  name = 'missing_duplicate_string'
  level = 'context_sensitive'
  min_length = 2

  input_vocab_size = 4
  output_vocab_size = 2
  chance_accuracy = 0.5
  HOLE, PAD = 2, 3

  def sample_example(self, key, length, max_length):
    k_string, k_hole = jax.random.split(key)
    half = length // 2
    word = random_tokens(k_string, 2, max_length)
    p = jnp.arange(max_length)
    hole = jax.random.randint(k_hole, (), 0, 2 * half)
    doubled = word[p % jnp.maximum(half, 1)]
    tokens = jnp.where(p < 2 * half, jnp.where(p == hole, self.HOLE, doubled), jnp.where(p < length, self.PAD, 0))
    return tokens, word[hole % jnp.maximum(half, 1)][None], jnp.ones((1,), bool)


@dataclasses.dataclass(frozen=True)
class OddsFirst(SymbolTask):
  """The symbols at odd positions, then those at even positions (1-indexed):
  `t1 t2 t3 t4 t5 -> t1 t3 t5 t2 t4`.

  Examples: `00110101 -> 0100 0111`, `101 -> 11 0`.
  Vocabulary: inputs and answers {0, .., vocab_size-1} (paper: 2). Output length = input
  length. Minimum length 1. Chance accuracy 1/vocab_size.
  Convention: the order of the paper's text and of the reference code's docstring
  example (1-indexed odd positions first); the reference code itself emits the other
  half first.
  """

  name = 'odds_first'
  level = 'context_sensitive'
  vocab_size: int = 2

  def output_length(self, length):
    return length

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    t = jnp.arange(max_length)
    odd = (length + 1) // 2  # 1-indexed odd positions = 0-indexed even ones
    source = jnp.where(t < odd, 2 * t, 2 * (t - odd) + 1)
    return tokens, tokens[jnp.clip(source, 0, max_length - 1)], t < length


@dataclasses.dataclass(frozen=True)
class BinaryAddition(Task):
  """Sum of two binary numbers, little-endian: `a + b -> a + b`.

  The input is `a 2 b` (2 is the + sign), the answer the sum without leading zeros,
  then a terminator 2, then 0-padding; the mask covers the sum and the terminator.
  Examples: `001 2 01101 -> 01011 2 0 0 0 0` (4 + 22 = 26),
            `1001 2 000001 -> 100101 2 0 0 0 0 0` (9 + 32 = 41).
  Vocabulary: inputs {0, 1, +}; answer {0, 1, terminator}. Output length = input length
  + 1 (the paper's slot; the sum needs at most length - 1 bits). Minimum length 3.
  Lengths: the length - 1 digits are split as len_a ~ U{1 .. length-2}; each number is
  uniform in [1, 2**len - 1] written with exactly len bits (trailing zeros allowed).
  Chance accuracy 1/2 (a uniform guess of a bit).
  """

  name = 'binary_addition'
  level = 'context_sensitive'
  min_length = 3
  digit_tokens = (0, 1)

  input_vocab_size = 3
  output_vocab_size = 3
  chance_accuracy = 0.5
  SEPARATOR = TERMINATOR = 2

  def output_length(self, length):
    return length + 1

  def answer(self, a, b):
    return arithmetic.add(a, b, 2)

  def sample_example(self, key, length, max_length):
    tokens, a, b = arithmetic.random_operands(key, length, max_length, 2, self.SEPARATOR)
    result = self.answer(a, b)
    size = arithmetic.significant_digits(result)
    slots = self.output_length(max_length)
    t = jnp.arange(slots)
    result = jnp.pad(result, (0, slots - max_length))
    targets = jnp.where(t < size, result, jnp.where(t == size, self.TERMINATOR, 0))
    return tokens, targets, t <= size


@dataclasses.dataclass(frozen=True)
class BinaryMultiplication(BinaryAddition):
  """Product of two binary numbers, little-endian: `a * b -> a * b`.

  As binary_addition with 2 meaning the * sign: the answer is the product without
  leading zeros, a terminator 2, then 0-padding, and the mask covers the product and the
  terminator.
  Examples: `01 2 11 -> 011 2 0` (2 * 3 = 6), `101 2 001 -> 00101 2 0` (5 * 4 = 20).
  Vocabulary: inputs {0, 1, *}; answer {0, 1, terminator}. Output length = input length
  (the product needs at most length - 1 bits). Minimum length 3. Numbers as in
  binary_addition. Chance accuracy 1/2.
  """

  name = 'binary_multiplication'

  def output_length(self, length):
    return length

  def answer(self, a, b):
    return arithmetic.multiply_bits(a, b)


@dataclasses.dataclass(frozen=True)
class ComputeSqrt(Task):
  """floor(sqrt(n)) of a binary number n, little-endian in and out.

  The input is n uniform in [1, 2**length - 1] written with exactly `length` bits; the
  answer is floor(sqrt(n)) written with exactly ceil(length / 2) bits (zero-padded), all
  scored.
  Examples: `101001 -> 011` (37 -> 6), `111 -> 01` (7 -> 2).
  Vocabulary: inputs {0, 1}; answer {0, 1}. Output length ceil(length / 2). Minimum
  length 1. Chance accuracy 1/2 (a uniform guess of a bit; the top root bit is 1 for
  most n, so an input-blind guess does somewhat better at short lengths).
  Convention: little-endian, as the paper's text says; the reference code writes both
  numbers big-endian.
  """

  name = 'compute_sqrt'
  level = 'context_sensitive'
  digit_tokens = (0, 1)

  input_vocab_size = 2
  output_vocab_size = 2
  chance_accuracy = 0.5

  def output_length(self, length):
    return (length + 1) // 2

  def sample_example(self, key, length, max_length):
    number = arithmetic.random_number(key, length, max_length, 2)
    root = arithmetic.isqrt_bits(number)
    return number, root, jnp.ones(root.shape, bool)


@dataclasses.dataclass(frozen=True)
class BucketSort(SymbolTask):
  """Sort a string over `vocab_size` symbols.

  Examples: `421302 -> 012234`, `3313 -> 1333`.
  Vocabulary: inputs and answers {0, .., vocab_size-1} (paper: 5). Output length = input
  length. Minimum length 1. Chance accuracy 1/vocab_size.
  """

  name = 'bucket_sort'
  level = 'context_sensitive'
  vocab_size: int = 5

  def output_length(self, length):
    return length

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    t = jnp.arange(max_length)
    symbols = jnp.arange(self.vocab_size)
    counts = jnp.sum((tokens[:, None] == symbols) & (t < length)[:, None], axis=0)
    # Position t of the sorted string holds the number of symbols whose block ends by t.
    block_end = jnp.cumsum(counts)
    targets = jnp.where(t < length, jnp.sum(block_end[None, :] <= t[:, None], axis=1), 0)
    return tokens, targets, t < length
