"""Position samplers: contiguous, randomized (Ruoss et al. 2023) and random continuous."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pe_research.positions import (
    SAMPLERS, contiguous, evaluates_unseen_positions, make_sampler, random_continuous, randomized)
from pe_research.validation import validate
from tests.conftest import default, tiny_config


def _positions_config(sampler, max_length=64, resample_at_eval=True):
  return ml_collections.ConfigDict({'sampler': sampler, 'max_length': max_length,
                                    'resample_at_eval': resample_at_eval})


def _check_rows(positions, num_valid, max_length, cap=np.inf):
  """Real entries: strictly increasing in [0, max_length); padding: continues the row (up
  to `cap`)."""
  positions, num_valid = np.asarray(positions), np.asarray(num_valid)
  for row, n in zip(positions, num_valid):
    real = row[:n]
    assert np.all(np.diff(real) > 0), row
    assert np.all(real >= 0) and np.all(real < max_length), row
    last = real[-1] if n else -1
    np.testing.assert_allclose(row[n:], np.minimum(last + np.arange(1, len(row) - n + 1), cap))


# Fixed shapes (one compilation each); hypothesis varies the key and the real lengths.
SEQ_LEN = 12
_RANDOMIZED = {m: jax.jit(randomized(m), static_argnums=2) for m in (12, 40)}
_CONTINUOUS = jax.jit(random_continuous(2048), static_argnums=2)
_NUM_VALID = st.lists(st.integers(0, SEQ_LEN), min_size=4, max_size=4)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), max_length=st.sampled_from([12, 40]), num_valid=_NUM_VALID)
def test_randomized_rows_are_increasing_subsets_below_max_length(seed, max_length, num_valid):
  num_valid = np.array(num_valid, np.int32)
  positions = _RANDOMIZED[max_length](jax.random.key(seed), jnp.asarray(num_valid), SEQ_LEN)
  assert positions.dtype == jnp.int32 and positions.shape == (4, SEQ_LEN)
  _check_rows(positions, num_valid, max_length, cap=max_length - 1)  # every position, even padding, < L_max


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_valid=_NUM_VALID)
def test_random_continuous_rows_are_sorted_floats_below_max_length(seed, num_valid):
  num_valid = np.array(num_valid, np.int32)
  positions = _CONTINUOUS(jax.random.key(seed), jnp.asarray(num_valid), SEQ_LEN)
  assert jnp.issubdtype(positions.dtype, jnp.floating)
  _check_rows(positions, num_valid, 2048)


def test_randomized_fills_all_of_a_short_range():
  # num_valid = L_max: the only subset is all of [0, L_max).
  positions = randomized(6)(jax.random.key(0), jnp.array([6, 6]), 6)
  np.testing.assert_array_equal(positions, [list(range(6))] * 2)
  # A padded slot longer than L_max (an evaluation bucket) still works: padding is capped.
  positions = randomized(6)(jax.random.key(0), jnp.array([6, 2]), 9)
  np.testing.assert_array_equal(positions[0], [0, 1, 2, 3, 4, 5, 5, 5, 5])
  assert positions[1, 0] < positions[1, 1] < 6 and np.all(positions[1, 2:] <= 5)


@pytest.mark.parametrize('make', [randomized, random_continuous])
def test_random_samplers_are_reproducible_from_their_key(make):
  sample = make(100)
  num_valid = jnp.array([3, 8, 5])
  first = sample(jax.random.key(7), num_valid, 8)
  np.testing.assert_array_equal(first, sample(jax.random.key(7), num_valid, 8))
  assert not np.array_equal(first, sample(jax.random.key(8), num_valid, 8))
  np.testing.assert_array_equal(jax.jit(sample, static_argnums=2)(jax.random.key(7), num_valid, 8), first)


def test_randomized_subset_is_uniform_not_a_truncated_longer_subset():
  # Two real tokens in a 16-slot row, L_max = 64. A uniform 2-subset has E[min] = (64 - 2) / 3
  # ~ 20.7 and E[max] = 2 * 65 / 3 - 1 ~ 42.3; cutting a sorted 16-subset after two entries
  # would give E[min] = 65 / 17 - 1 ~ 2.8 and E[max] ~ 6.6.
  num_valid = jnp.full((4000,), 2, jnp.int32)
  positions = np.asarray(randomized(64)(jax.random.key(0), num_valid, 16))[:, :2]
  assert abs(positions[:, 0].mean() - 62 / 3) < 1.0
  assert abs(positions[:, 1].mean() - (2 * 65 / 3 - 1)) < 1.0
  # Every position of [0, 64) is drawn, about equally often (each with probability 2/64).
  counts = np.bincount(positions.ravel(), minlength=64)
  assert counts.min() > 0.6 * 4000 * 2 / 64 and counts.max() < 1.4 * 4000 * 2 / 64


def test_random_continuous_marginal_is_uniform():
  positions = np.asarray(random_continuous(10.0)(jax.random.key(1), jnp.full((5000,), 1, jnp.int32), 3))[:, 0]
  assert abs(positions.mean() - 5.0) < 0.15 and positions.min() >= 0 and positions.max() < 10


def test_contiguous_positions():
  np.testing.assert_array_equal(contiguous(None, jnp.array([2, 4]), 4), [[0, 1, 2, 3], [0, 1, 2, 3]])


@pytest.mark.parametrize('name', ['randomized', 'random_continuous'])
def test_random_at_evaluation_too_unless_told_otherwise(name):
  num_valid, key = jnp.array([5, 5]), jax.random.key(3)
  train = make_sampler(_positions_config(name), training=True)(key, num_valid, 5)
  assert not np.array_equal(train, np.broadcast_to(np.arange(5), (2, 5)))
  # The default, as Ruoss et al.: random positions at evaluation too.
  assert default.get_config().encoding.positions.resample_at_eval
  resampled = make_sampler(_positions_config(name), training=False)(key, num_valid, 5)
  np.testing.assert_array_equal(resampled, train)
  contiguous_config = _positions_config(name, resample_at_eval=False)
  assert evaluates_unseen_positions(contiguous_config) and not evaluates_unseen_positions(_positions_config(name))
  evaluation = make_sampler(contiguous_config, training=False)(key, num_valid, 5)
  np.testing.assert_array_equal(evaluation, np.broadcast_to(np.arange(5), (2, 5)))


def test_every_sampler_is_registered_and_unknown_names_are_listed():
  assert {'contiguous', 'randomized', 'random_continuous'} <= set(SAMPLERS)
  with pytest.raises(ValueError, match='unknown position sampler .*random_continuous.*randomized'):
    make_sampler(_positions_config('shuffled'), training=True)


@pytest.mark.parametrize('overrides, message', [
    # reverse_string at eval length 8 makes 16 tokens.
    ({'encoding__positions__sampler': 'randomized', 'encoding__positions__max_length': 15},
     r'config.encoding.positions.max_length=15 is shorter than the longest sequence \(16 tokens.*allowed: >= 16'),
    ({'encoding__name': 'learned', 'encoding__positions__sampler': 'randomized'},
     r'config.encoding.learned.max_length=256 does not cover .*max_length=2048.*allowed: >= 2048'),
    ({'encoding__name': 'learned', 'encoding__positions__sampler': 'random_continuous'},
     r"positions.sampler='random_continuous' makes float positions, which encoding 'learned' cannot take"),
])
def test_sampler_config_errors_name_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    validate(tiny_config(**overrides))


def test_randomized_configs_are_valid_for_every_encoding():
  from pe_research.encodings import ENCODINGS
  for name in ENCODINGS:
    causal = ENCODINGS[name].causal_only
    validate(tiny_config(encoding__name=name, model__causal=causal, encoding__positions__sampler='randomized',
                         encoding__learned__max_length=2048))
    if ENCODINGS[name].float_positions:
      validate(tiny_config(encoding__name=name, model__causal=causal,
                           encoding__positions__sampler='random_continuous'))
