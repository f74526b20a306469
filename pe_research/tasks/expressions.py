"""Random bracketed arithmetic expressions of an exact length, built and evaluated on the
device (for modular_arithmetic_brackets and solve_equation).

The grammar and distribution are those of Deletang et al. (2023): an expression of length
n is

    n = 1: d      n = 2: -d      n = 3: (d)      n = 4: (-d)
    n >= 5: (E_a op E_b)   with a ~ U{1 .. n-4}, b = n - 3 - a,

with every digit d uniform in {0 .. modulus-1} and every op uniform over the allowed
operators; values are taken modulo `modulus` (Python's %, so in 0 .. modulus-1). Digits
and operators are drawn per position from 16 random bits each (multiply-shift: within
n / 2**16 of uniform for n choices).

Construction, top-down in rounds (a `lax.while_loop`, one round per tree level, about 20
rounds at length 500): every position knows the pending sub-expression (start, length)
it lies in; in a round every pending sub-expression of length >= 5 splits at once, which
fixes the positions of its '(', operator and ')' and hands every other position the
child it lies in. Sub-expressions of length <= 4 are leaves and stop. The split of the
sub-expression starting at s is drawn from a counter-based hash of (seed, s), so no
gather is needed; each position starts at most one sub-expression, so every split has
its own draw.

Evaluation, bottom-up: the internal nodes (their '(' positions, in order) are gathered
into a compact array, and each round computes every node whose two children are known,
until the root is (as many rounds as the tree is deep).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pe_research.tasks.base import scatter_or_drop


OPERATORS = '+-*'
# Final per-position codes after construction. Pending or leaf sub-expressions carry
# their length (>= 1); an opening bracket carries -(split + _OPEN_BASE).
_OPERATOR, _CLOSE, _OPEN_BASE = -1, -2, 10


class Alphabet(NamedTuple):
  """Token ids of the non-digit symbols (digits are the tokens 0 .. modulus-1)."""

  plus: int
  minus: int
  times: int
  open: int
  close: int


class Expression(NamedTuple):
  """tokens int32[max_length] (0 after the expression), value int32 scalar, is_digit
  bool[max_length] (the positions holding a digit)."""

  tokens: jax.Array
  value: jax.Array
  is_digit: jax.Array


def hash_uniform(seed: jax.Array, x: jax.Array) -> jax.Array:
  """float32 in [0, 1) from a 32-bit integer hash of (seed, x): a cheap counter-based
  random number (x is a position; seed comes from a jax.random key)."""
  h = (x.astype(jnp.uint32) * jnp.uint32(0x9E3779B9)) ^ seed
  h = (h ^ (h >> 16)) * jnp.uint32(0x7FEB352D)
  h = (h ^ (h >> 15)) * jnp.uint32(0x846CA68B)
  h = h ^ (h >> 16)
  return (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def _below(bits16: jax.Array, n: int) -> jax.Array:
  """int32 uniform in [0, n) from 16 random bits (multiply-shift; bias below n / 2**16)."""
  return ((bits16.astype(jnp.int32) * n) >> 16).astype(jnp.int32)


def _shift_down(x: jax.Array, k: int) -> jax.Array:
  """x[p + k] at p (zero past the end)."""
  return jnp.concatenate([x, jnp.zeros(k, x.dtype)])[k:]


def _construct(seed: jax.Array, length: jax.Array, max_length: int):
  """Per-position (start, code) of the final tree: leaves keep their length as code."""
  p = jnp.arange(max_length, dtype=jnp.int32)
  start = jnp.zeros(max_length, jnp.int32)
  code = jnp.where(p < length, length, 0).astype(jnp.int32)

  def splitting(state):
    return jnp.any(state[1] >= 5)

  def split(state):
    start, n = state
    internal = n >= 5
    a = 1 + (hash_uniform(seed, start) * (n - 4).astype(jnp.float32)).astype(jnp.int32)
    a = jnp.minimum(a, n - 4)  # float rounding could reach n - 3
    operator = start + 1 + a
    in_left = p < operator
    new_start = jnp.where(in_left, start + 1, operator + 1)
    new_code = jnp.where(in_left, a, n - 3 - a)
    new_code = jnp.where(p == operator, _OPERATOR, new_code)
    new_code = jnp.where(p == start + n - 1, _CLOSE, new_code)
    new_code = jnp.where(p == start, -(a + _OPEN_BASE), new_code)
    return jnp.where(internal, new_start, start), jnp.where(internal, new_code, n)

  return jax.lax.while_loop(splitting, split, (start, code))


def random_expression(key: jax.Array, length: jax.Array, max_length: int, modulus: int, operators: str,
                      alphabet: Alphabet) -> Expression:
  """A random expression of exactly `length` tokens (1 <= length <= max_length, may be
  traced) using the binary `operators` (a subset of '+-*'), and its value mod `modulus`."""
  if not operators or set(operators) - set(OPERATORS):
    raise ValueError(f'operators must be a nonempty subset of {OPERATORS!r}, got {operators!r}')
  k_symbols, k_split = jax.random.split(key)
  words = jax.random.bits(k_symbols, (max_length,), jnp.uint32)
  digit = _below(words & 0xFFFF, modulus)
  operator = _below(words >> 16, len(operators))  # index into `operators`, drawn per position
  seed = jax.random.bits(k_split, (), jnp.uint32)
  p = jnp.arange(max_length, dtype=jnp.int32)
  start, code = _construct(seed, length, max_length)

  # Tokens.
  offset = p - start
  is_leaf = code > 0
  op_tokens = jnp.asarray([getattr(alphabet, {'+': 'plus', '-': 'minus', '*': 'times'}[c]) for c in operators])
  leaf_tokens = jnp.stack([
      digit,
      jnp.where(offset == 0, alphabet.minus, digit),
      jnp.where(offset == 0, alphabet.open, jnp.where(offset == 1, digit, alphabet.close)),
      jnp.where(offset == 0, alphabet.open, jnp.where(offset == 1, alphabet.minus,
                                                      jnp.where(offset == 2, digit, alphabet.close))),
  ])[jnp.clip(code - 1, 0, 3), p]
  is_open = code <= -_OPEN_BASE
  structure_tokens = jnp.where(is_open, alphabet.open,
                               jnp.where(code == _OPERATOR, op_tokens[operator], alphabet.close))
  in_expression = p < length
  tokens = jnp.where(in_expression, jnp.where(is_leaf, leaf_tokens, structure_tokens), 0)
  # The digit of a leaf of length n sits at offset 0, 1, 1, 2 for n = 1, 2, 3, 4.
  digit_offset = jnp.where(code == 1, 0, jnp.where(code == 4, 2, 1))
  is_digit = in_expression & is_leaf & (offset == digit_offset)

  # Leaf values, at each leaf's first position.
  leaf_digit = jnp.where(code == 1, digit, jnp.where(code == 4, _shift_down(digit, 2), _shift_down(digit, 1)))
  leaf_value = jnp.where((code == 2) | (code == 4), (-leaf_digit) % modulus, leaf_digit)

  # Compact node arrays: node k is the k-th opening bracket of an internal node.
  num_nodes = (max_length - 1) // 4 + 1  # an expression of length n has <= (n - 1) / 4 of them
  rank = jnp.cumsum(is_open.astype(jnp.int32)) - 1
  node = scatter_or_drop(jnp.zeros(num_nodes, jnp.int32), jnp.where(is_open, rank, num_nodes), p)
  # A child is described by its value (>= 0) if it is a leaf, else by -(its node + 1).
  child = jnp.where(is_open, -(rank + 1), leaf_value)
  clip = lambda i: jnp.clip(i, 0, max_length - 1)  # noqa: E731
  op_position = clip(node + 1 - code[node] - _OPEN_BASE)
  op_code = jnp.asarray([OPERATORS.index(c) for c in operators])[operator[op_position]]
  left, right = child[clip(node + 1)], child[clip(op_position + 1)]

  def unresolved(value):
    return is_open[0] & (value[0] < 0)

  def combine(value):
    lv = jnp.where(left >= 0, left, value[jnp.maximum(-left - 1, 0)])
    rv = jnp.where(right >= 0, right, value[jnp.maximum(-right - 1, 0)])
    result = jnp.where(op_code == 0, lv + rv, jnp.where(op_code == 1, lv - rv, lv * rv)) % modulus
    return jnp.where((lv >= 0) & (rv >= 0), result, value)

  value = jax.lax.while_loop(unresolved, combine, jnp.full(num_nodes, -1, jnp.int32))
  return Expression(tokens=tokens, value=jnp.where(is_open[0], value[0], leaf_value[0]), is_digit=is_digit)
