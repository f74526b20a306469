"""Regular tasks (Deletang et al. 2023, "Neural Networks and the Chomsky Hierarchy")."""

import dataclasses

import jax
import jax.numpy as jnp

from pe_research.tasks.base import ModularTask, SingleAnswerTask, random_tokens


@dataclasses.dataclass(frozen=True)
class EvenPairs(SingleAnswerTask):
  """Is the number of unequal adjacent pairs ('01' and '10') even (0) or odd (1)?

  Examples: `001110 -> 0` (one '01', one '10'), `0101001 -> 1` (three '01', two '10').
  Vocabulary: inputs {0, 1}; answer {0, 1}. Output length 1 for every input length.
  Minimum length 1 (a single bit has no pair: answer 0). Chance accuracy 1/2. The answer
  equals `first bit != last bit`; it is computed from the pairs, as defined.
  """

  name = 'even_pairs'
  level = 'regular'

  input_vocab_size = 2
  output_vocab_size = 2
  chance_accuracy = 0.5

  def sample_example(self, key, length, max_length):
    bits = random_tokens(key, 2, max_length)
    pair = jnp.arange(max_length - 1) < length - 1
    unequal = jnp.sum((bits[:-1] != bits[1:]) & pair)
    return bits, (unequal % 2)[None], jnp.ones((1,), bool)


@dataclasses.dataclass(frozen=True)
class ModularArithmetic(ModularTask):
  """Value modulo `modulus` of an expression of digits and the operators + - *, where *
  binds tighter than + and - (no brackets).

  Examples (modulus 5): `1+2*3 -> 2`, `0*1+4*3-2 -> 0`, `-3+4 -> 1` (even length).
  Vocabulary: digits 0..modulus-1 are tokens 0..modulus-1, then + - * (paper: modulus 5,
  8 tokens); answer 0..modulus-1. Output length 1. Minimum length 1.
  Lengths: the expression alternates digit, operator, digit, ..., so it has odd length.
  An even length is realized as a unary minus on the first digit followed by an
  expression of the odd length below it (`-3+4*2`); the paper instead shortens even
  lengths by one, which breaks the requested length. Digits and operators are uniform.
  Chance accuracy 1/modulus (the literature's chance level; at short lengths products
  make 0 somewhat more frequent).
  """

  name = 'modular_arithmetic'
  level = 'regular'

  @property
  def input_vocab_size(self):
    return self.modulus + 3

  def sample_example(self, key, length, max_length):
    m = self.modulus
    plus, minus = m, m + 1  # operator k in {0: +, 1: -, 2: *} is token m + k
    num_digits = (max_length + 1) // 2
    k_digits, k_ops = jax.random.split(key)
    digits = random_tokens(k_digits, m, num_digits)
    ops = random_tokens(k_ops, 3, num_digits)  # ops[j] precedes digits[j] (j >= 1)
    unary = length % 2 == 0
    used = (length - unary + 1) // 2  # digits in the expression
    # Layout: digit j at 2j + unary, operator j at 2j - 1 + unary.
    p = jnp.arange(max_length)
    slot = jnp.clip((p - unary + 1) // 2, 0, num_digits - 1)
    tokens = jnp.where((p - unary) % 2 == 0, digits[slot], plus + ops[slot])
    tokens = jnp.where(unary & (p == 0), minus, tokens)
    tokens = jnp.where(p < length, tokens, 0)
    # Evaluate as a sum of products: a + or - starts a new term, and a - (or the unary
    # minus) negates the term's first factor.
    j = jnp.arange(num_digits)
    starts = (j == 0) | (ops != 2)
    factor = jnp.where(jnp.where(j == 0, unary, ops == 1), -digits, digits) % m

    def segmented_product(x, y):
      (x_value, x_starts), (y_value, y_starts) = x, y
      return jnp.where(y_starts, y_value, x_value * y_value % m), x_starts | y_starts

    products, _ = jax.lax.associative_scan(segmented_product, (factor, starts))
    next_starts = jnp.concatenate([starts[1:], jnp.ones(1, bool)])
    term_end = (j < used) & (next_starts | (j == used - 1))
    value = jnp.sum(jnp.where(term_end, products, 0)) % m
    return tokens, value[None], jnp.ones((1,), bool)


@dataclasses.dataclass(frozen=True)
class ParityCheck(SingleAnswerTask):
  """Is the number of ones in a bit string even (0) or odd (1)?

  Examples: `1010100 -> 1` (three ones), `0110 -> 0`.
  Vocabulary: inputs {0, 1}; answer {0, 1}. Output length 1 for every input length.
  Minimum length 1. Chance accuracy 1/2.
  """

  name = 'parity_check'
  level = 'regular'

  input_vocab_size = 2
  output_vocab_size = 2
  chance_accuracy = 0.5

  def sample_example(self, key, length, max_length):
    bits = random_tokens(key, 2, max_length)
    bits = jnp.where(jnp.arange(max_length) < length, bits, 0)
    return bits, (jnp.sum(bits) % 2)[None], jnp.ones((1,), bool)


@dataclasses.dataclass(frozen=True)
class CycleNavigation(SingleAnswerTask):
  """Final position on a cycle of `cycle_length` states, starting at 0, after a sequence
  of moves: token 0 stays, 1 moves +1, 2 moves -1.

  Examples (5-cycle): `1 2 0 2 2 -> 3` (+1 -1 +0 -1 -1 = -2), `1 1 1 2 -> 2`.
  Vocabulary: inputs {0, 1, 2}; answer 0..cycle_length-1 (paper: 5). Output length 1.
  Minimum length 1. Chance accuracy 1/cycle_length.
  Convention: the token-to-move labels follow the paper's text (0 = stay, +1, -1); the
  reference code maps token t to move t - 1 instead.
  """

  name = 'cycle_navigation'
  level = 'regular'
  cycle_length: int = 5

  input_vocab_size = 3

  @property
  def output_vocab_size(self):
    return self.cycle_length

  @property
  def chance_accuracy(self):
    return 1 / self.cycle_length

  def sample_example(self, key, length, max_length):
    moves = random_tokens(key, 3, max_length)
    moves = jnp.where(jnp.arange(max_length) < length, moves, 0)
    step = jnp.where(moves == 2, -1, moves)
    return moves, (jnp.sum(step) % self.cycle_length)[None], jnp.ones((1,), bool)
