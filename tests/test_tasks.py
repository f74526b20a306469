"""Every task against a plain-Python reference of its definition.

Each reference parses an input token list (asserting it is well formed) and computes the
answer the task's docstring defines, with Python's own integers (and `eval` for
expressions). A generated example is right when its masked targets are exactly that
answer and the mask is a prefix of that length.
"""

import functools
import math
import re

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research.tasks import LEVELS, TASKS, arithmetic, get_task
from pe_research.tasks.base import scatter_or_drop

# --------------------------------------------------------------------------- references


def _expression_string(tokens, symbols):
  """Tokens to characters: digits 0..4 are themselves, others from `symbols` (id -> char)."""
  return ''.join(str(t) if t < 5 else symbols[t] for t in tokens)


def _parse_bracketed(s: str, operators: str) -> int:
  """Asserts s is in the grammar d | -d | (d) | (-d) | (E op E); returns its end."""

  def expression(i):
    if s[i].isdigit():
      return i + 1
    if s[i] == '-':
      assert s[i + 1].isdigit(), s
      return i + 2
    assert s[i] == '(', s
    if s[i + 1].isdigit() and s[i + 2] == ')':
      return i + 3
    if s[i + 1] == '-' and s[i + 2].isdigit() and s[i + 3] == ')':
      return i + 4
    i = expression(i + 1)
    assert s[i] in operators, s
    i = expression(i + 1)
    assert s[i] == ')', s
    return i + 1

  assert expression(0) == len(s), s
  return len(s)


def _bits_to_int(bits):
  assert set(bits) <= {0, 1}, bits
  return sum(b << i for i, b in enumerate(bits))


def _int_to_bits(n):
  return [int(c) for c in bin(n)[2:][::-1]]


def _two_numbers(x, separator, base):
  assert x.count(separator) == 1, x
  i = x.index(separator)
  a, b = x[:i], x[i + 1:]
  assert a and b and all(0 <= d < base for d in a + b), x
  a, b = sum(d * base**k for k, d in enumerate(a)), sum(d * base**k for k, d in enumerate(b))
  assert a >= 1 and b >= 1, x
  return a, b


def even_pairs(x):
  assert set(x) <= {0, 1}
  return [sum(u != v for u, v in zip(x, x[1:])) % 2]


def modular_arithmetic(x):
  s = _expression_string(x, {5: '+', 6: '-', 7: '*'})
  assert re.fullmatch(r'-?\d([-+*]\d)*', s) and s.startswith('-') == (len(s) % 2 == 0), s
  return [eval(s) % 5]


def parity_check(x):
  assert set(x) <= {0, 1}
  return [sum(x) % 2]


def cycle_navigation(x):
  return [sum({0: 0, 1: 1, 2: -1}[t] for t in x) % 5]


def stack_manipulation(x):
  size = next((i for i, t in enumerate(x) if t >= 2), len(x))
  assert size >= 1 and all(t in (2, 3, 4) for t in x[size:]), x
  assert len(x) == 1 or size < len(x), x  # at least one action from length 2 on
  stack = list(x[:size])
  for action in x[size:]:
    if action == 2:
      if stack:
        stack.pop()
    else:
      stack.append(action - 3)
  return stack[::-1] + [2]


def reverse_string(x):
  return x[::-1]


def modular_arithmetic_brackets(x):
  s = _expression_string(x, {5: '+', 6: '-', 7: '*', 8: '(', 9: ')'})
  _parse_bracketed(s, '+-*')
  return [eval(s) % 5]


def solve_equation(x):
  s = _expression_string(x, {5: '+', 6: '-', 7: '(', 8: ')', 9: 'x', 10: '='})
  assert s.count('x') == 1 and s[-2] == '=' and s[-1].isdigit(), s
  expression, value = s[:-2], int(s[-1])
  _parse_bracketed(expression.replace('x', '0'), '+-')
  solutions = [d for d in range(5) if eval(expression.replace('x', str(d))) % 5 == value]
  assert len(solutions) == 1, s
  return solutions


def duplicate_string(x):
  return x + x


def missing_duplicate_string(x):
  half = len(x) // 2
  if len(x) % 2:
    assert x[-1] == 3, x
  doubled = x[:2 * half]
  assert doubled.count(2) == 1 and set(doubled) <= {0, 1, 2}, x
  hole = doubled.index(2)
  other = (hole + half) % (2 * half)
  for i in range(half):
    if i != hole % half:
      assert doubled[i] == doubled[i + half], x
  return [doubled[other]]


def odds_first(x):
  return x[0::2] + x[1::2]


def binary_addition(x):
  a, b = _two_numbers(x, 2, 2)
  return _int_to_bits(a + b) + [2]


def binary_multiplication(x):
  a, b = _two_numbers(x, 2, 2)
  return _int_to_bits(a * b) + [2]


def compute_sqrt(x):
  n = _bits_to_int(x)
  assert n >= 1
  root = math.isqrt(n)
  return [(root >> i) & 1 for i in range((len(x) + 1) // 2)]


def bucket_sort(x):
  return sorted(x)


def copy(x):
  return list(x)


def sort(x):
  assert set(x) <= set(range(11)), x
  numbers = ''.join(',' if t == 10 else str(t) for t in x).split(',')
  for number in numbers:
    assert 1 <= len(number) <= 3 and (len(number) == 1 or number[-1] != '0'), x
  values = sorted(int(number[::-1]) for number in numbers)
  written = ','.join(str(v)[::-1] for v in values)
  return [10 if c == ',' else int(c) for c in written]


def addition(x):
  a, b = _two_numbers(x, 10, 10)
  return [int(c) for c in str(a + b)[::-1]]


def associative_recall(x):
  if len(x) % 2 == 0:
    assert x[0] == 32, x
    x = x[1:]
  pairs, query = x[:-1], x[-1]
  keys, values = pairs[0::2], pairs[1::2]
  assert all(k < 16 for k in keys) and all(16 <= v < 32 for v in values) and query < 16, x
  assert query in keys, x
  return [values[len(keys) - 1 - keys[::-1].index(query)] - 16]


def index_lookup(x):
  assert x.count(16) == 1, x
  i = x.index(16)
  symbols, digits = x[:i], [t - 17 for t in x[i + 1:]]
  assert symbols and all(s < 16 for s in symbols) and digits and all(0 <= d < 10 for d in digits), x
  assert len(digits) == 1 or digits[-1] != 0, x
  index = sum(d * 10**k for k, d in enumerate(digits))
  assert index < len(symbols), x
  return [symbols[index]]


def count(x):
  assert all(t < 16 for t in x)
  return [int(c) for c in str(len(x))[::-1]]


def selective_copy(x):
  data = [t for t in x if t != 16]
  assert all(t < 16 for t in data) and len(data) == (len(x) + 1) // 2, x
  return data


def flip_flop(x):
  assert x[-1] == 6 and x[0] in (0, 1) and all(t < 6 for t in x[:-1]), x
  memory = None
  for t in x[:-1]:
    if t < 2:
      memory = t
    elif t >= 4:
      assert t - 4 == memory, x  # a read shows the last written bit
  return [memory]


REFERENCES = {
    name: globals()[name] for name in TASKS
}

# ----------------------------------------------------------------------------- sampling

# Slots and the lengths of the examples drawn in them, for a task of minimum length lo:
# the smallest slot (evaluation buckets go down to it), and in a slot of 500: 500 (= the
# slot), 497, 40, 17 and every length from lo to 8, twice.
SLOTS = {
    'min': lambda lo: [lo] * 4,
    500: lambda lo: [500, 497, 40, 17] + [lo + i % (9 - lo) for i in range(16)],
}


def _slot(slot, task):
  return task.min_length if slot == 'min' else slot

KEYS = (1, 2, 1)  # the third repeats the first: determinism


@functools.lru_cache(maxsize=None)
def _batches():
  """{(task, slot): Batch with a leading key axis} for every task and slot, from ONE
  jit(vmap over keys) of all the samplers: compiling every task together is several
  times cheaper than one by one, and it exercises both jax.jit and jax.vmap."""
  tasks = {name: get_task(name) for name in TASKS}

  def sample_all(key):
    return {f'{name}@{slot}': task.sample(key, len(lengths(task.min_length)),
                                      jnp.asarray(lengths(task.min_length), jnp.int32), _slot(slot, task))
            for name, task in tasks.items() for slot, lengths in SLOTS.items()}

  keys = jnp.stack([jax.random.key(k) for k in KEYS])
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(sample_all))(keys))


def _check_example(task, inputs, length, targets, mask):
  x = [int(t) for t in inputs[:length]]
  assert all(int(t) == 0 for t in inputs[length:]), 'inputs after the length must be padding'
  answer = REFERENCES[task.name](x)
  size = int(mask.sum())
  assert mask[:size].all() and not mask[size:].any(), 'the mask must be a prefix'
  assert size == len(answer), (task.name, x, answer, mask)
  assert [int(t) for t in targets[:size]] == answer, (task.name, x, answer, targets[:size])
  assert size <= int(task.output_length(length))


@pytest.mark.parametrize('slot', list(SLOTS))
@pytest.mark.parametrize('name', list(TASKS))
def test_matches_reference(name, slot):
  task = get_task(name)
  lengths = SLOTS[slot](task.min_length)
  out = _batches()[f'{name}@{slot}']
  batch, slot = len(lengths), _slot(slot, task)
  assert out.inputs.shape == (len(KEYS), batch, slot)
  assert out.targets.shape == out.loss_mask.shape == (len(KEYS), batch, int(task.output_length(slot)))
  assert (out.inputs >= 0).all() and (out.inputs < task.input_vocab_size).all()
  assert (out.targets >= 0).all() and (out.targets < task.output_vocab_size).all()
  np.testing.assert_array_equal(out.lengths[0], lengths)
  np.testing.assert_array_equal(out.output_lengths[0], [task.output_length(n) for n in lengths])
  # Determinism: the same key gives the same batch (another key another one, below).
  for field in ('inputs', 'targets', 'loss_mask'):
    np.testing.assert_array_equal(getattr(out, field)[0], getattr(out, field)[2])
  for k in (0, 1):
    for b in range(batch):
      _check_example(task, out.inputs[k, b], lengths[b], out.targets[k, b], out.loss_mask[k, b])
  if slot > 3:  # at the smallest lengths some inputs or answers are fixed (compute_sqrt, count)
    assert not np.array_equal(out.inputs[0], out.inputs[1])
    answers = {tuple(out.targets[k, b][out.loss_mask[k, b]]) for k in (0, 1) for b in range(batch)}
    assert len(answers) > 1, 'answers should vary'


@pytest.mark.parametrize('name', list(TASKS))
def test_lengths_and_sizes(name):
  task = get_task(name)
  sizes = [task.output_length(n) for n in range(1, 600)]
  assert all(isinstance(s, int) and s >= 1 for s in sizes)
  assert sizes == sorted(sizes), 'output_length must be nondecreasing'
  traced = jax.jit(task.output_length)(jnp.arange(1, 600, dtype=jnp.int32))
  np.testing.assert_array_equal(traced, sizes)
  assert task.level in ('regular', 'context_free', 'context_sensitive', 'classic')
  assert set(task.digit_tokens) <= set(range(task.input_vocab_size))
  assert 0 < task.chance_accuracy < 1
  with pytest.raises(ValueError, match='minimum length'):
    task.sample(jax.random.key(0), 2, task.min_length - 1)
  with pytest.raises(ValueError, match='exceeds'):
    task.sample(jax.random.key(0), 2, task.min_length + 1, task.min_length)


def test_registry():
  levels = {}
  for name, cls in TASKS.items():
    assert cls.name == name
    levels.setdefault(get_task(name).level, []).append(name)
  assert set(levels) == set(LEVELS)
  # Deletang et al.'s regular tasks; the others are counted from the registry.
  assert {'cycle_navigation', 'even_pairs', 'modular_arithmetic', 'parity_check'} <= set(levels['regular'])
  with pytest.raises(ValueError, match='known tasks'):
    get_task('nope')


def test_hyperparameters_change_the_task():
  task = TASKS['modular_arithmetic'](modulus=7)
  assert task.input_vocab_size == 10 and task.output_vocab_size == 7 and task.digit_tokens == tuple(range(7))
  with pytest.raises(ValueError, match='max_digits'):
    TASKS['sort'](max_digits=1)


# --------------------------------------------------------------------- big-number helpers


def _digits(n, base, width):
  return jnp.asarray([(n // base**i) % base for i in range(width)], jnp.int32)


def _value(digits, base):
  return sum(int(d) * base**i for i, d in enumerate(np.asarray(digits)))


WIDTH = 70


@functools.lru_cache(maxsize=None)
def _jitted(name):
  return jax.jit({
      'add2': lambda a, b: arithmetic.add(a, b, 2),
      'add10': lambda a, b: arithmetic.add(a, b, 10),
      'mul': arithmetic.multiply_bits,
      'sqrt': arithmetic.isqrt_bits,
  }[name])


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.integers(0, 2**(WIDTH - 1) - 1), st.integers(0, 2**(WIDTH - 1) - 1))
def test_add_bits(a, b):
  assert _value(_jitted('add2')(_digits(a, 2, WIDTH), _digits(b, 2, WIDTH)), 2) == a + b


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.integers(0, 10**(WIDTH - 1) - 1), st.integers(0, 10**(WIDTH - 1) - 1))
def test_add_decimal(a, b):
  assert _value(_jitted('add10')(_digits(a, 10, WIDTH), _digits(b, 10, WIDTH)), 10) == a + b


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.integers(0, WIDTH), st.data())
def test_multiply_bits(split, data):
  a = data.draw(st.integers(0, 2**split - 1))
  b = data.draw(st.integers(0, 2**(WIDTH - split) - 1))
  assert _value(_jitted('mul')(_digits(a, 2, WIDTH), _digits(b, 2, WIDTH)), 2) == a * b


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.integers(0, 2**WIDTH - 1))
def test_isqrt_bits(n):
  root = _jitted('sqrt')(_digits(n, 2, WIDTH))
  assert root.shape == (WIDTH // 2,) and _value(root, 2) == math.isqrt(n)


def test_big_number_extremes():
  width = 500
  top = 2**width - 1
  root = jax.jit(arithmetic.isqrt_bits)(_digits(top, 2, width))
  assert _value(root, 2) == math.isqrt(top)
  half = 2**(width // 2) - 1
  product = jax.jit(arithmetic.multiply_bits)(_digits(half, 2, width), _digits(half, 2, width))
  assert _value(product, 2) == half * half
  total = jax.jit(lambda a, b: arithmetic.add(a, b, 10))(_digits(10**499 - 1, 10, width), _digits(1, 10, width))
  assert _value(total, 10) == 10**499


def test_random_number_range():
  sample = jax.jit(jax.vmap(lambda key, n: arithmetic.random_number(key, n, 64, 2)))
  sizes = jnp.arange(1, 65)
  numbers = np.asarray(sample(jax.random.split(jax.random.key(0), 64), sizes))
  for n, bits in zip(np.asarray(sizes), numbers):
    assert 1 <= _value(bits, 2) < 2**int(n)
  assert _value(numbers[0], 2) == 1  # one bit: the only nonzero number


@pytest.mark.parametrize('method', ['set', 'max'])
def test_scatter_or_drop_drops_every_index_past_the_end(method):
  """Against a plain-Python scatter, under jit and vmap (where a GPU let dropped updates
  land in the next row); indices len(operand) and beyond drop their update."""
  rng = np.random.default_rng(0)
  rows, size = 6, 5
  operands = rng.integers(-9, 9, (rows, size))
  # Distinct indices (so no update races another), 7 of 0 .. size + 2: two or more drops.
  indices = rng.permuted(np.tile(np.arange(size + 3), (rows, 1)), axis=1)[:, :7]
  updates = rng.integers(-9, 9, (rows, 7))
  out = jax.jit(jax.vmap(lambda o, i, u: scatter_or_drop(o, i, u, method)))(operands, indices, updates)
  for operand, index, update, got in zip(operands, indices, updates, np.asarray(out)):
    want = [int(v) for v in operand]
    for i, u in zip(index, update):
      if i < size:
        want[i] = int(u) if method == 'set' else max(want[i], int(u))
    assert [int(v) for v in got] == want
