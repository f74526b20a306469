"""Big numbers as digit arrays: vectorized arithmetic for the number tasks.

A number is an int32 array of digits in base `base`, least significant first, in a static
slot (zeros above its top digit). Every function handles one number (vmap it over a
batch) and runs inside jit with no loop over digits: digits are grouped into limbs of
several digits, limb sums are local, and a carry chain is resolved by one prefix-maximum
scan over the limbs (a carry enters limb i iff the nearest limb below i that does not
merely pass a carry on generates one). The square root is the one sequential algorithm
(one root bit per step, a `lax.fori_loop` over the static slot); its remainder is kept in
signed limbs whose sign can be read off the top nonzero limb, so a step needs no carry
chain at all.

Exact against Python's integers; tested in tests/test_tasks.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np



def limb_size(base: int, bound: int = 2**15) -> int:
  """Digits per limb: the most whose limb value stays below `bound`."""
  return max(1, int(math.floor(math.log(bound) / math.log(base))))


def to_limbs(digits: jax.Array, base: int, per_limb: int) -> jax.Array:
  """int32[ceil(n / per_limb)]: groups of `per_limb` digits as base**per_limb limbs."""
  n = digits.shape[0]
  limbs = -(-n // per_limb)
  grouped = jnp.pad(digits, (0, limbs * per_limb - n)).reshape(limbs, per_limb)
  return jnp.sum(grouped * jnp.asarray(base ** np.arange(per_limb), jnp.int32), axis=1)


def from_limbs(limbs: jax.Array, base: int, per_limb: int, num_digits: int) -> jax.Array:
  """int32[num_digits]: the digits of canonical limbs (the inverse of `to_limbs`)."""
  powers = jnp.asarray(base ** np.arange(per_limb), jnp.int32)
  digits = (limbs[:, None] // powers) % base
  return jnp.pad(digits.reshape(-1), (0, max(0, num_digits - digits.size)))[:num_digits]


def resolve_carries(limbs: jax.Array, radix: int) -> jax.Array:
  """Canonical limbs (each in [0, radix)) of the number sum_i limbs[i] * radix**i.

  Needs limbs[0] <= 2 * radix - 1 and every other limb <= 2 * radix - 2, so that a limb
  plus an incoming carry emits at most one carry. A carry leaving the top limb is dropped:
  the caller sizes the slot so that none does.
  """
  generate = limbs >= radix
  decided = generate | (limbs != radix - 1)  # limbs equal to radix - 1 pass a carry on
  i = jnp.arange(limbs.shape[0], dtype=jnp.int32)
  # The nearest deciding limb below each limb, encoded with its carry in the lowest bit.
  nearest = jax.lax.cummax(jnp.where(decided, 2 * i + generate, -1), axis=0)
  carry_in = jnp.concatenate([jnp.zeros(1, bool), (nearest[:-1] >= 0) & (nearest[:-1] % 2 == 1)])
  return (limbs + carry_in) % radix


def normalize(limbs: jax.Array, radix: int, max_limb: int) -> jax.Array:
  """Canonical limbs of a number whose limbs are nonnegative and at most `max_limb`
  (static): local carry rounds until limbs are small enough, then `resolve_carries`."""
  while max_limb > 2 * radix - 2:
    limbs = limbs % radix + jnp.concatenate([jnp.zeros(1, limbs.dtype), limbs[:-1] // radix])
    max_limb = radix - 1 + max_limb // radix
  return resolve_carries(limbs, radix)


def add(a: jax.Array, b: jax.Array, base: int) -> jax.Array:
  """Digits of a + b (same slot as a and b; the sum must fit in it)."""
  per_limb = limb_size(base)
  radix = base**per_limb
  limbs = normalize(to_limbs(a, base, per_limb) + to_limbs(b, base, per_limb), radix, 2 * radix - 2)
  return from_limbs(limbs, base, per_limb, a.shape[0])


def _convolve(x: jax.Array, y: jax.Array) -> jax.Array:
  """Full convolution [2m - 1] of two int32[m] vectors: the outer product, sheared so that
  each anti-diagonal becomes a column (row i shifted right by i), summed over rows."""
  m = x.shape[0]
  outer = x[:, None] * y[None, :]
  sheared = jnp.pad(outer, ((0, 0), (0, m))).reshape(-1)[: m * (2 * m - 1)]
  return jnp.sum(sheared.reshape(m, 2 * m - 1), axis=0)


def multiply_bits(a: jax.Array, b: jax.Array) -> jax.Array:
  """Bits of a * b (same slot as a; the product must fit in it).

  12-bit limbs keep every limb product sum below 2**31 for slots up to ~500 limbs."""
  n = a.shape[0]
  per_limb = 12
  limbs = -(-n // per_limb)
  if limbs * (2**per_limb - 1) ** 2 >= 2**31:
    raise ValueError(f'multiply_bits supports slots up to {per_limb * (2**31 // (2**per_limb - 1) ** 2)} bits')
  product = _convolve(to_limbs(a, 2, per_limb), to_limbs(b, 2, per_limb))[:limbs]
  radix = 2**per_limb
  return from_limbs(normalize(product, radix, limbs * (radix - 1) ** 2), 2, per_limb, n)


def _times4_plus(limbs: jax.Array, low: jax.Array, shift: int) -> jax.Array:
  """4 * x + low for x in signed limbs of radix 2**shift, with one local carry step:
  limbs in (-radix, radix) stay in [-4, radix) (low is 0..3 and enters the bottom limb,
  whose 4 * x mod radix is at most radix - 4)."""
  y = 4 * limbs
  return (y & ((1 << shift) - 1)) + jnp.concatenate([low[None], y[:-1] >> shift])


def isqrt_bits(bits: jax.Array) -> jax.Array:
  """int32[ceil(n / 2)]: the bits of floor(sqrt(x)) for the n-bit number x.

  Digit-by-digit (shift-and-subtract) square root, one root bit per step: bring down the
  next two bits of x into the remainder (rem = 4 rem + pair), compare with the trial
  4 root + 1, subtract if not larger and append the outcome to the root. The remainder
  lives in signed limbs of radix R = 2**16 that stay within (-R, R); for such limbs the
  sign of the number is the sign of its top nonzero limb, so the comparison is a
  reduction and the subtraction needs one local carry step, never a chain.
  """
  shift = 16
  radix = 1 << shift
  n = bits.shape[0]
  root_bits = (n + 1) // 2
  num_limbs = -(-(root_bits + 3) // shift) + 1  # remainder < 2**(root_bits + 3), plus a spare limb
  pairs = jnp.pad(bits, (0, 2 * root_bits - n)).reshape(root_bits, 2)
  pairs = (pairs[:, 0] + 2 * pairs[:, 1])[::-1]  # most significant pair first
  index = jnp.arange(num_limbs)
  zero = jnp.zeros(1, jnp.int32)

  def step(i, state):
    rem, root = state
    rem = _times4_plus(rem, pairs[i], shift)
    diff = rem - _times4_plus(root, jnp.int32(1), shift)
    # One rounding carry step brings limbs back within (-R/2 - 2, R/2 + 2).
    carry = (diff + radix // 2) >> shift
    diff = diff - (carry << shift) + jnp.concatenate([zero, carry[:-1]])
    top = jnp.max(jnp.where(diff != 0, index, -1))
    fits = jnp.sum(jnp.where(index == top, diff, 0)) >= 0  # rem >= trial
    rem = jnp.where(fits, diff, rem)
    doubled = 2 * root  # root limbs are canonical: doubling carries at most one bit
    root = (doubled & (radix - 1)) + jnp.concatenate([fits[None].astype(jnp.int32), doubled[:-1] >> shift])
    return rem, root

  limbs = jnp.zeros(num_limbs, jnp.int32)
  _, root = jax.lax.fori_loop(0, root_bits, step, (limbs, limbs))
  return from_limbs(root, 2, shift, root_bits)


def significant_digits(digits: jax.Array) -> jax.Array:
  """Number of digits without leading zeros (0 for the number zero)."""
  return jnp.max(jnp.where(digits != 0, jnp.arange(1, digits.shape[0] + 1), 0))


def random_number(key: jax.Array, num_digits: jax.Array, width: int, base: int) -> jax.Array:
  """int32[width]: a number uniform in [1, base**num_digits - 1] (num_digits >= 1, may be
  traced), written with digits above num_digits zero.

  The digits above the lowest `chunk` (base**chunk <= 2**30) are i.i.d. uniform; the low
  chunk is one `randint`, drawn from [1, ..) when the high digits are all zero, so the
  number is never zero. This is exact below `chunk` digits and within a relative 2**-30
  of uniform above it.
  """
  chunk = int(math.floor(30 / math.log2(base)))
  k_high, k_low = jax.random.split(key)
  position = jnp.arange(width)
  if base == 2:
    words = jax.random.bits(k_high, (-(-width // 32),), jnp.uint32)
    high = ((words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1).reshape(-1)[:width].astype(jnp.int32)
  else:
    high = jax.random.randint(k_high, (width,), 0, base, jnp.int32)
  high = jnp.where((position >= chunk) & (position < num_digits), high, 0)
  powers = jnp.asarray(base ** np.arange(chunk + 1), jnp.int32)
  low = jax.random.randint(
      k_low, (), jnp.where(jnp.any(high != 0), 0, 1), powers[jnp.minimum(num_digits, chunk)], jnp.int32
  )
  low_digits = (low // powers[:chunk]) % base
  return jnp.where(position < chunk, jnp.pad(low_digits, (0, max(0, width - chunk)))[:width], high)


def shift_up(digits: jax.Array, offset: jax.Array) -> jax.Array:
  """digits moved `offset` (traced, >= 0) places up the slot, zeros below: x * base**offset
  truncated to the slot; used to place a number after another in an input."""
  position = jnp.arange(digits.shape[0])
  return jnp.where(position >= offset, digits[jnp.clip(position - offset, 0, digits.shape[0] - 1)], 0)


def decimal_digit_count(n):
  """Number of decimal digits of n >= 0 (int or int array; 1 for 0)."""
  return 1 + sum((n >= 10**k) * 1 for k in range(1, 10))


def random_operands(key: jax.Array, length: jax.Array, width: int, base: int, separator: int):
  """Two numbers and the input `a <separator> b` of exactly `length` (>= 3) tokens.

  The digits are split as len_a ~ U{1 .. length-2}, len_b = length - 1 - len_a (as in
  Deletang et al. 2023); each number is uniform in [1, base**len - 1] and written with
  exactly len digits, least significant first (so it may end in zeros).
  Returns (tokens int32[width], a int32[width], b int32[width]).
  """
  k_split, k_a, k_b = jax.random.split(key, 3)
  len_a = jax.random.randint(k_split, (), 1, length - 1)
  a = random_number(k_a, len_a, width, base)
  b = random_number(k_b, length - 1 - len_a, width, base)
  position = jnp.arange(width)
  tokens = jnp.where(position < len_a, a, jnp.where(position == len_a, separator, shift_up(b, len_a + 1)))
  return jnp.where(position < length, tokens, 0), a, b
