"""Classic copy, arithmetic and recall tasks of the length-generalization literature:
copy, sort and count (Kazemnejad et al. 2023), decimal addition (Zhou et al. 2024;
McLeish et al. 2024), associative recall, index lookup, selective copy (Gu & Dao 2023)
and flip-flop (Liu et al. 2023).

Every vocabulary is fixed, whatever the length. Multi-digit decimal numbers are written
least significant digit first everywhere in this family (the reversed format of Zhou et
al. 2024 and of Abacus embeddings).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pe_research.tasks import arithmetic
from pe_research.tasks.arithmetic import decimal_digit_count
from pe_research.tasks.base import SingleAnswerTask, SymbolTask, Task, random_tokens, scatter_or_drop

_DIGITS = tuple(range(10))


@dataclasses.dataclass(frozen=True)
class Copy(SymbolTask):
  """Copy a string over `vocab_size` symbols.

  Examples: `3 1 4 1 5 -> 3 1 4 1 5`, `7 -> 7`.
  Vocabulary: inputs and answers {0, .., vocab_size-1} (default 16). Output length =
  input length. Minimum length 1. Chance accuracy 1/vocab_size.
  """

  name = 'copy'
  level = 'classic'
  vocab_size: int = 16

  def output_length(self, length):
    return length

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    return tokens, tokens, jnp.arange(max_length) < length


@dataclasses.dataclass(frozen=True)
class Sort(Task):
  """Sort a list of decimal numbers (Kazemnejad et al. 2023, multi-digit sort).

  The input is numbers of 1 to `max_digits` digits separated by commas, each written
  least significant digit first and without leading zeros; the answer is the same
  numbers in increasing order, in the same format (so it has the input's length).
  Examples (numbers shown as read, most significant first): `52,7,130,7 -> 7,7,52,130`
  is the token string `25,7,031,7 -> 7,7,25,031`; `9,10 -> 9,10` is `9,01 -> 9,01`.
  Vocabulary: digits 0-9, comma 10; the answer uses the same 11 tokens. Output length =
  input length, all scored. Minimum length 1.
  Lengths: number sizes are i.i.d. uniform in 1..max_digits (default 3), placed left to
  right; the last number takes the room left (1..max_digits), and when max_digits + 1
  places are left they hold a one-digit and a (max_digits - 1)-digit number, so every
  length is reached exactly. Digits are uniform (the most significant one of a
  multi-digit number in 1-9). Chance accuracy 1/10 (a uniform guess of a digit).
  """

  name = 'sort'
  level = 'classic'
  digit_tokens = _DIGITS
  max_digits: int = 3

  input_vocab_size = 11
  output_vocab_size = 11
  chance_accuracy = 0.1
  COMMA = 10

  def __post_init__(self):
    if not 2 <= self.max_digits <= 9:
      raise ValueError(f'sort needs 2 <= max_digits <= 9, got {self.max_digits}')

  def output_length(self, length):
    return length

  def _layout(self, sizes, count, length, max_length):
    """Per position: (number index, offset in the number, is comma) for numbers of the
    given sizes written left to right with one comma between numbers."""
    i = jnp.arange(sizes.shape[0])
    starts = jnp.cumsum(sizes + 1) - (sizes + 1)
    p = jnp.arange(max_length)
    first = scatter_or_drop(jnp.zeros(max_length, jnp.int32), jnp.where(i < count, starts, max_length), 1)
    number = jnp.clip(jnp.cumsum(first) - 1, 0, sizes.shape[0] - 1)
    offset = p - starts[number]
    return number, offset, (offset == sizes[number]) & (p < length)

  def sample_example(self, key, length, max_length):
    d = self.max_digits
    slots = max_length // 2 + 2  # more than the numbers an input can hold
    k_sizes, k_digits = jax.random.split(key)
    i = jnp.arange(slots)
    drawn = jax.random.randint(k_sizes, (slots,), 1, d + 1)
    starts = jnp.cumsum(drawn + 1) - (drawn + 1)
    count = jnp.sum(starts <= length - 1)
    last = count - 1
    room = length - starts[last]  # 1 .. d + 1 places for the last number
    split = room == d + 1
    sizes = jnp.where(i < last, drawn, 0)
    sizes = jnp.where(i == last, jnp.where(split, 1, room), sizes)
    sizes = jnp.where((i == last + 1) & split, d - 1, sizes)
    count = count + split
    number, offset, is_comma = self._layout(sizes, count, length, max_length)
    p = jnp.arange(max_length)
    leading = (offset == sizes[number] - 1) & (sizes[number] >= 2)
    digits = jax.random.randint(k_digits, (max_length,), leading.astype(jnp.int32), 10)
    tokens = jnp.where(p < length, jnp.where(is_comma, self.COMMA, digits), 0)
    # Values (at most 9 digits, so int32), sorted with absent numbers last.
    starts = jnp.cumsum(sizes + 1) - (sizes + 1)
    values = sum(
        jnp.where(k < sizes, digits[jnp.clip(starts + k, 0, max_length - 1)], 0) * 10**k for k in range(d)
    )
    values = jnp.sort(jnp.where(i < count, values, np.iinfo(np.int32).max))
    sorted_sizes = jnp.where(i < count, decimal_digit_count(values), 0)
    number, offset, is_comma = self._layout(sorted_sizes, count, length, max_length)
    power = jnp.asarray(10 ** np.arange(10), jnp.int32)[jnp.clip(offset, 0, 9)]
    targets = jnp.where(p < length, jnp.where(is_comma, self.COMMA, values[number] // power % 10), 0)
    return tokens, targets, p < length


@dataclasses.dataclass(frozen=True)
class Addition(Task):
  """Sum of two decimal numbers, least significant digit first.

  The input is `a + b`; the answer is the sum without leading zeros (its last digit is
  nonzero); the mask covers exactly its digits.
  Examples (as tokens, least significant first): `1 9 + 2 -> 3 9` (91 + 2 = 93),
  `5 + 5 -> 0 1` (5 + 5 = 10).
  Vocabulary: digits 0-9, + (10); answer digits 0-9. Output length = max(1, length - 1)
  (the sum has at most length - 1 digits). Minimum length 3.
  Lengths: the length - 1 digits are split as len_a ~ U{1 .. length-2}; each number is
  uniform in [1, 10**len - 1] written with exactly len digits (so it may end in zeros),
  as binary_addition does in base 2. Chance accuracy 1/10.
  """

  name = 'addition'
  level = 'classic'
  min_length = 3
  digit_tokens = _DIGITS

  input_vocab_size = 11
  output_vocab_size = 10
  chance_accuracy = 0.1
  PLUS = 10

  def output_length(self, length):
    return length - 1 + (length < 2)

  def sample_example(self, key, length, max_length):
    tokens, a, b = arithmetic.random_operands(key, length, max_length, 10, self.PLUS)
    total = arithmetic.add(a, b, 10)
    slots = self.output_length(max_length)
    t = jnp.arange(slots)
    return tokens, total[:slots], t < arithmetic.significant_digits(total)


@dataclasses.dataclass(frozen=True)
class AssociativeRecall(SingleAnswerTask):
  """Key-value pairs, then a query key: answer the value paired with it.

  Input `k1 v1 k2 v2 ... kn vn q`; keys and values have separate tokens. The query is
  the key of a uniformly chosen pair; keys may repeat (the vocabulary is fixed while n
  grows), and then the latest pair with that key wins, as in a memory that is
  overwritten.
  Examples (keys a-p, values 0-15): `a 3 b 7 c 1 b -> 7`, `_ a 3 a 5 a -> 5` (even
  length, with the filler).
  Vocabulary: keys 0..num_keys-1, values num_keys..num_keys+num_values-1, filler last
  (defaults 16 + 16 + 1 = 33 tokens); answer the value index 0..num_values-1. Output
  length 1. Minimum length 3.
  Lengths: n = floor((length - 1) / 2) pairs; an even length starts with one filler
  token. Chance accuracy 1/num_values.
  """

  name = 'associative_recall'
  level = 'classic'
  min_length = 3
  num_keys: int = 16
  num_values: int = 16

  @property
  def input_vocab_size(self):
    return self.num_keys + self.num_values + 1

  @property
  def output_vocab_size(self):
    return self.num_values

  @property
  def chance_accuracy(self):
    return 1 / self.num_values

  def sample_example(self, key, length, max_length):
    num_pairs = (max_length - 1) // 2
    k_keys, k_values, k_query = jax.random.split(key, 3)
    keys = random_tokens(k_keys, self.num_keys, num_pairs)
    values = random_tokens(k_values, self.num_values, num_pairs)
    filler = length % 2 == 0
    pairs = (length - 1 - filler) // 2
    query = keys[jax.random.randint(k_query, (), 0, pairs)]
    i = jnp.arange(num_pairs)
    latest = jnp.max(jnp.where((keys == query) & (i < pairs), i, -1))
    p = jnp.arange(max_length)
    q = p - filler
    pair = jnp.clip(q // 2, 0, num_pairs - 1)
    tokens = jnp.where(q % 2 == 0, keys[pair], self.num_keys + values[pair])
    tokens = jnp.where(filler & (p == 0), self.num_keys + self.num_values, tokens)
    tokens = jnp.where(p == length - 1, query, jnp.where(p < length, tokens, 0))
    return tokens, values[latest][None], jnp.ones((1,), bool)


@dataclasses.dataclass(frozen=True)
class IndexLookup(SingleAnswerTask):
  """A string, a separator, then a position in decimal: answer the symbol there.

  Input `x_0 .. x_{n-1} | i` with i written least significant digit first; the answer is
  x_i (positions count from 0).
  Examples (symbols a-p): `c a b | 2 -> b`, `abcdefghijklm | 2 1 -> m` (i = 12).
  Vocabulary: symbols 0..vocab_size-1, separator vocab_size, digits vocab_size+1..
  vocab_size+10 (default 27 tokens); answer a symbol. Output length 1. Minimum length 3.
  Lengths: i is uniform over [0, I] with I the largest index for which a string of
  length - 1 - digits(I) symbols, the separator and the digits of I fit, and
  n = length - 1 - digits(i) (so i < n). Chance accuracy 1/vocab_size.
  """

  name = 'index_lookup'
  level = 'classic'
  min_length = 3
  vocab_size: int = 16

  @property
  def digit_tokens(self):
    return tuple(range(self.vocab_size + 1, self.vocab_size + 11))

  @property
  def input_vocab_size(self):
    return self.vocab_size + 11

  @property
  def output_vocab_size(self):
    return self.vocab_size

  @property
  def chance_accuracy(self):
    return 1 / self.vocab_size

  def sample_example(self, key, length, max_length):
    k_symbols, k_index = jax.random.split(key)
    # The largest index with d digits that fits: i + d <= length - 2.
    largest = -1
    for d in range(1, len(str(max_length)) + 1):
      candidate = jnp.minimum(length - 2 - d, 10**d - 1)
      largest = jnp.maximum(largest, jnp.where(candidate >= (10 ** (d - 1) if d > 1 else 0), candidate, -1))
    index = jax.random.randint(k_index, (), 0, largest + 1)
    size = length - 1 - decimal_digit_count(index)
    symbols = random_tokens(k_symbols, self.vocab_size, max_length)
    p = jnp.arange(max_length)
    power = jnp.asarray(10 ** np.arange(10), jnp.int32)[jnp.clip(p - size - 1, 0, 9)]
    digit = self.vocab_size + 1 + index // power % 10
    tokens = jnp.where(p < size, symbols, jnp.where(p == size, self.vocab_size, jnp.where(p < length, digit, 0)))
    return tokens, symbols[index][None], jnp.ones((1,), bool)


@dataclasses.dataclass(frozen=True)
class Count(Task):
  """How many tokens are there? (Kazemnejad et al. 2023, count.)

  The input is `length` uniform symbols; the answer is `length` in decimal, least
  significant digit first. The content is irrelevant: a model must count positions.
  Examples: `a b c -> 3`, `a b c d e f g h i j k l -> 2 1` (12).
  Vocabulary: symbols 0..vocab_size-1 (default 16); answer digits 0-9. Output length =
  the number of decimal digits of the length, all scored. Minimum length 1. Chance
  accuracy 1/10.
  """

  name = 'count'
  level = 'classic'
  vocab_size: int = 16

  output_vocab_size = 10
  chance_accuracy = 0.1

  @property
  def input_vocab_size(self):
    return self.vocab_size

  def output_length(self, length):
    return decimal_digit_count(length)

  def sample_example(self, key, length, max_length):
    tokens = random_tokens(key, self.vocab_size, max_length)
    t = jnp.arange(self.output_length(max_length))
    digits = length // jnp.asarray(10 ** np.arange(t.size), jnp.int32) % 10
    return tokens, digits, t < decimal_digit_count(length)


@dataclasses.dataclass(frozen=True)
class SelectiveCopy(Task):
  """Copy the data tokens, in order, skipping the noise tokens (Gu & Dao 2023).

  ceil(length / 2) positions, a uniformly random subset, hold uniform data symbols; the
  others hold the noise token.
  Examples (noise `.`): `. 3 . 7 1 . -> 3 7 1`, `4 . 2 -> 4 2`.
  Vocabulary: data 0..vocab_size-1, noise vocab_size (default 17 tokens); answer data.
  Output length ceil(length / 2), all scored. Minimum length 1. Chance accuracy
  1/vocab_size.
  """

  name = 'selective_copy'
  level = 'classic'
  vocab_size: int = 16

  @property
  def input_vocab_size(self):
    return self.vocab_size + 1

  @property
  def output_vocab_size(self):
    return self.vocab_size

  @property
  def chance_accuracy(self):
    return 1 / self.vocab_size

  def output_length(self, length):
    return (length + 1) // 2

  def sample_example(self, key, length, max_length):
    k_subset, k_data = jax.random.split(key)
    p = jnp.arange(max_length)
    kept = (length + 1) // 2
    # A uniform subset of `kept` positions: the ones with the smallest random keys. A key
    # is 31 - b random bits above the position (b bits), so keys are distinct.
    b = max(1, (max_length - 1).bit_length())
    random_key = (jax.random.bits(k_subset, (max_length,), jnp.uint32) >> (b + 1) << b) | p.astype(jnp.uint32)
    random_key = jnp.where(p < length, random_key, jnp.uint32(0xFFFFFFFF))
    chosen = random_key <= jnp.sort(random_key)[kept - 1]
    data = random_tokens(k_data, self.vocab_size, max_length)
    tokens = jnp.where(chosen, data, jnp.where(p < length, self.vocab_size, 0))
    slots = self.output_length(max_length)
    rank = jnp.cumsum(chosen.astype(jnp.int32)) - 1
    targets = scatter_or_drop(jnp.zeros(slots, jnp.int32), jnp.where(chosen, rank, slots), data)
    return tokens, targets, jnp.arange(slots) < kept


@dataclasses.dataclass(frozen=True)
class FlipFlop(SingleAnswerTask):
  """Remember the last written bit (flip-flop language, Liu et al. 2023).

  The input is instructions, each a single token: write b, ignore b, read b (a read
  shows the bit last written), starting with a write, then the query; the answer is the
  bit last written.
  Examples: `w1 i0 r1 i0 ? -> 1`, `w0 i1 w1 i0 i0 ? -> 1`.
  Vocabulary: w0 0, w1 1, i0 2, i1 3, r0 4, r1 5, query 6; answer {0, 1}. Output length
  1. Minimum length 2 (`w b ?`).
  Sampling: after the first write, each instruction is a write with probability
  p_write, a read with p_read, else an ignore (the paper's FFL(0.8): 0.1, 0.1, 0.8);
  written and ignored bits are uniform. Convention: the paper writes an instruction and
  its bit as two tokens; here they are one token, so every length is a valid sequence.
  Chance accuracy 1/2.
  """

  name = 'flip_flop'
  level = 'classic'
  min_length = 2
  p_write: float = 0.1
  p_read: float = 0.1

  input_vocab_size = 7
  output_vocab_size = 2
  chance_accuracy = 0.5
  WRITE, IGNORE, READ, QUERY = 0, 2, 4, 6

  def __post_init__(self):
    if not (0 <= self.p_write and 0 <= self.p_read and self.p_write + self.p_read <= 1):
      raise ValueError(f'flip_flop needs p_write, p_read >= 0 with sum <= 1, got {self.p_write}, {self.p_read}')

  def sample_example(self, key, length, max_length):
    words = jax.random.bits(key, (max_length,), jnp.uint32)
    bit = (words & 1).astype(jnp.int32)
    u = (words >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
    p = jnp.arange(max_length)
    kind = jnp.where(u < self.p_write, self.WRITE, jnp.where(u < self.p_write + self.p_read, self.READ, self.IGNORE))
    kind = jnp.where(p == 0, self.WRITE, kind)
    last_write = jax.lax.cummax(jnp.where(kind == self.WRITE, p, -1), axis=0)
    memory = bit[last_write]
    tokens = kind + jnp.where(kind == self.READ, memory, bit)
    tokens = jnp.where(p < length - 1, tokens, jnp.where(p == length - 1, self.QUERY, 0))
    return tokens, memory[length - 2][None], jnp.ones((1,), bool)
