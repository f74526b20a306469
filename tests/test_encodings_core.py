"""The original encodings against their papers' formulas and the properties they claim."""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research.encodings import ENCODINGS, encoding_class
from pe_research.encodings.alibi import ALiBi, alibi_slopes
from pe_research.encodings.base import DistanceBias
from pe_research.encodings.learned import Learned
from pe_research.encodings.rope import RoPE
from pe_research.encodings.sinusoidal import Sinusoidal, SinusoidalConcat, sinusoid
from pe_research.encodings.t5_bias import T5Bias, t5_buckets


def test_sinusoid_golden_matrix_d4():
  expected = [[0, 1, 0, 1], [0.841, 0.540, 0.010, 1.000], [0.909, -0.416, 0.020, 1.000]]
  np.testing.assert_allclose(sinusoid(jnp.arange(3), 4), expected, atol=1e-3)


def test_sinusoid_matches_vaswani_formula_elementwise():
  d, positions = 8, np.array([0, 1, 5, 17])
  expected = np.zeros((len(positions), d))
  for row, p in enumerate(positions):
    for k in range(d // 2):
      expected[row, 2 * k] = math.sin(p / 10000 ** (2 * k / d))
      expected[row, 2 * k + 1] = math.cos(p / 10000 ** (2 * k / d))
  np.testing.assert_allclose(sinusoid(jnp.asarray(positions), d), expected, atol=1e-5)


def _press_slopes(n):
  """Press et al.'s rule written out: powers of two get 2^(-8h/n); otherwise the closest
  power of two c, then every other slope of 2c."""
  def power_of_two(m):
    start = 2 ** (-(2 ** -(math.log2(m) - 3)))
    return [start * start**i for i in range(m)]
  if math.log2(n).is_integer():
    return power_of_two(n)
  c = 2 ** math.floor(math.log2(n))
  return power_of_two(c) + power_of_two(2 * c)[0::2][: n - c]


@pytest.mark.parametrize('heads, expected', [
    (4, [0.25, 0.0625, 0.015625, 0.00390625]),
    (6, [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]),
    (8, [2.0 ** -h for h in range(1, 9)]),
    (12, [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
          0.707107, 0.353553, 0.176777, 0.088388]),
])
def test_alibi_slopes(heads, expected):
  np.testing.assert_allclose(alibi_slopes(heads), expected, rtol=1e-5)
  np.testing.assert_allclose(alibi_slopes(heads), _press_slopes(heads), rtol=1e-12)


OFFSETS = [-200, -128, -127, -64, -32, -20, -16, -15, -8, -1, 0, 1, 8, 15, 16, 20, 32, 64, 127, 128, 200]


def test_t5_buckets_golden():
  bidirectional = [15, 15, 15, 14, 12, 10, 10, 9, 8, 1, 0, 17, 24, 25, 26, 26, 28, 30, 31, 31, 31]
  causal = [31, 31, 31, 26, 21, 17, 16, 15, 8, 1, 0] + [0] * 10
  np.testing.assert_array_equal(t5_buckets(jnp.asarray(OFFSETS), causal=False), bidirectional)
  np.testing.assert_array_equal(t5_buckets(jnp.asarray(OFFSETS), causal=True), causal)


def _random_qk(key, shape=(1, 6, 2, 8)):
  kq, kk = jax.random.split(key)
  return jax.random.normal(kq, shape), jax.random.normal(kk, shape)


def test_rope_dot_product_depends_only_on_offset():
  rope = RoPE(head_dim=8)
  q, k = _random_qk(jax.random.key(0), (1, 1, 1, 8))

  def score(i, j):
    qr, _ = rope.rotate(q, q, jnp.array([[i]]), jnp.array([[i]]))
    _, kr = rope.rotate(k, k, jnp.array([[j]]), jnp.array([[j]]))
    return float(jnp.sum(qr * kr))

  for i, j, shift in [(3, 1, 10), (0, 0, 57), (5, 9, 123), (20, 2, 1000)]:
    assert score(i, j) == pytest.approx(score(i + shift, j + shift), abs=1e-4)
  assert abs(score(3, 1) - score(3, 2)) > 1e-3  # and it does depend on the offset


def test_rope_is_a_rotation_of_half_split_pairs():
  q = jnp.arange(1.0, 5.0).reshape(1, 1, 1, 4)  # pairs (q0, q2) and (q1, q3)
  rotated, _ = RoPE(head_dim=4).rotate(q, q, jnp.array([[2]]), jnp.array([[2]]))
  theta = np.array([1.0, 10000 ** -0.5]) * 2
  x1, x2 = np.array([1.0, 2.0]), np.array([3.0, 4.0])
  expected = np.concatenate([x1 * np.cos(theta) - x2 * np.sin(theta), x2 * np.cos(theta) + x1 * np.sin(theta)])
  np.testing.assert_allclose(rotated.ravel(), expected, rtol=1e-5)


def _as_array(bias):
  return bias.materialize() if isinstance(bias, DistanceBias) else bias


@pytest.mark.parametrize('make', [
    lambda causal: ALiBi(num_heads=4, causal=causal),
    lambda causal: T5Bias(num_heads=4, causal=causal, rngs=nnx.Rngs(0)),
])
@pytest.mark.parametrize('causal', [True, False])
def test_relative_biases_unchanged_by_a_shift_of_all_positions(make, causal):
  encoding = make(causal)
  if isinstance(encoding, T5Bias):  # a non-trivial table, so the test can fail
    encoding.table.embedding[...] = jax.random.normal(jax.random.key(1), encoding.table.embedding.shape)
  positions = jnp.arange(7)[None]
  # ALiBi's is a DistanceBias (a description), T5's an array.
  bias = lambda p: _as_array(encoding.bias(p, p))  # noqa: E731
  base = bias(positions)
  assert float(jnp.std(base)) > 0
  for shift in (1, 13, 400):
    np.testing.assert_allclose(bias(positions + shift), base, atol=1e-6)


def test_alibi_bias_formula():
  bias = ALiBi(num_heads=4, causal=True).bias(jnp.arange(3)[None], jnp.arange(3)[None]).materialize()
  # head 0 has slope 1/4: B[i, j] = -(i - j) / 4.
  np.testing.assert_allclose(bias[0, 0], -np.subtract.outer(np.arange(3), np.arange(3)) / 4)


def test_concat_then_project_equals_adding_a_projected_code():
  d = 8
  encoding = SinusoidalConcat(d, nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (2, 5, d))
  positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
  kernel, bias = encoding.projection.kernel[...], encoding.projection.bias[...]
  w_token, w_position = kernel[:d], kernel[d:]
  expected = x @ w_token + sinusoid(positions, d) @ w_position + bias
  np.testing.assert_allclose(encoding.embed(x, positions), expected, atol=1e-5)


def test_sinusoidal_adds_the_code():
  x = jnp.zeros((1, 3, 4))
  out = Sinusoidal(4).embed(x, jnp.arange(3)[None])
  np.testing.assert_allclose(out[0], sinusoid(jnp.arange(3), 4), atol=1e-6)


def test_learned_table_refuses_positions_beyond_its_size():
  learned = Learned(max_length=8, dim=4, rngs=nnx.Rngs(0))
  x = jnp.zeros((1, 3, 4))
  assert learned.embed(x, jnp.array([[5, 6, 7]])).shape == (1, 3, 4)
  with pytest.raises(ValueError, match='max_length=8.*position 9'):
    learned.embed(x, jnp.array([[7, 8, 9]]))


@pytest.mark.parametrize('width', [3, 7])
def test_odd_widths_are_refused(width):
  with pytest.raises(ValueError, match=f'{width}'):
    Sinusoidal(width)
  with pytest.raises(ValueError, match=f'{width}'):
    RoPE(head_dim=width)


def test_registry_lists_names_on_unknown():
  assert {'none', 'sinusoidal', 'sinusoidal_concat', 'learned', 'rope', 'alibi', 't5_bias'} <= set(ENCODINGS)
  with pytest.raises(ValueError, match='unknown encoding .nope.*alibi'):
    encoding_class('nope')
