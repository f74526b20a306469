"""Position samplers: the explicit positions handed to the model.

Positions are never an `arange` hidden inside a layer: a sampler makes them, per example,
for the whole sequence (input and answer slots), and every encoding reads them. This is
what lets randomized or scaled positions compose with any encoding.

A sampler is `sampler(key, num_valid int32[B], seq_len: int) -> positions[B, seq_len]`:
the first `num_valid[b]` entries of row b are the positions of the real tokens (strictly
increasing); the rest belong to padding and are never attended to. Padding slots continue
the row (last real position + 1, + 2, ...; the randomized sampler caps them at L_max - 1).
A padding position may still exceed a table (contiguous positions of a long padded slot):
encodings clamp when they gather, and padding is masked, so it never produces NaN.

Samplers (config `encoding.positions.sampler`):
  * 'contiguous': 0, 1, ..., T-1.
  * 'randomized' (Ruoss et al. 2023, "Randomized Positional Encodings Boost Length
    Generalization of Transformers", arXiv 2305.16843): at training, each example's real
    tokens get an ordered uniformly random subset of [0, L_max) of exactly their number,
    L_max = `positions.max_length`; the model thus sees positions up to L_max while
    training on short sequences. At evaluation, by default (`positions.resample_at_eval`),
    a fresh random subset too, as Ruoss et al. evaluate; 0..T-1 with
    `resample_at_eval=False`, which runs warn about (`evaluates_unseen_positions`).
  * 'random_continuous': the same with sorted uniform floats in [0, L_max) (the order
    statistics of num_valid uniforms); float positions, so only encodings that accept them.
Works with every encoding: they all read the positions handed to them.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

PositionSampler = Callable[[jax.Array, jax.Array, int], jax.Array]


def contiguous(key: jax.Array, num_valid: jax.Array, seq_len: int) -> jax.Array:
  """Positions 0, 1, ..., seq_len-1 for every example (the key is unused)."""
  del key
  return jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (num_valid.shape[0], seq_len))


def _continue_padding(positions_BxT: jax.Array, num_valid_B: jax.Array, limit=None) -> jax.Array:
  """Keeps the first num_valid[b] entries of each row; padding continues from the last real
  position (last + 1, last + 2, ...), capped at `limit` if given."""
  t = jnp.arange(positions_BxT.shape[1])
  n = num_valid_B[:, None]
  last = jnp.take_along_axis(positions_BxT, jnp.maximum(n - 1, 0), axis=1)
  last = jnp.where(n > 0, last, -1).astype(positions_BxT.dtype)
  padding = last + (t - n + 1).astype(positions_BxT.dtype)
  if limit is not None:
    padding = jnp.minimum(padding, limit)
  return jnp.where(t < n, positions_BxT, padding)


def randomized(max_length: int) -> PositionSampler:
  """Sampler of ordered random subsets of [0, max_length): row b gets exactly num_valid[b]
  distinct integers, uniformly among all such subsets (the first num_valid[b] entries of a
  random permutation, sorted). Sampling per example with its own count, rather than one
  subset of size T cut at the length, keeps short sequences from favouring small positions.
  """

  def sample(key: jax.Array, num_valid: jax.Array, seq_len: int) -> jax.Array:
    t = jnp.arange(seq_len)
    # A padded slot may be longer than max_length; its real tokens never are (validated).
    extra = max(seq_len - max_length, 0)

    def one(key, n):
      permutation = jnp.pad(jax.random.permutation(key, max_length), (0, extra), constant_values=max_length)
      chosen = permutation[:seq_len].astype(jnp.int32)
      return jnp.sort(jnp.where(t < n, chosen, max_length))  # real positions first, sorted

    rows = jax.vmap(one)(jax.random.split(key, num_valid.shape[0]), num_valid)
    return _continue_padding(rows, num_valid, limit=max_length - 1)

  return sample


def random_continuous(max_length: int) -> PositionSampler:
  """Sampler of sorted uniform floats in [0, max_length): row b gets num_valid[b] of them."""

  def sample(key: jax.Array, num_valid: jax.Array, seq_len: int) -> jax.Array:
    t = jnp.arange(seq_len)
    uniform_BxT = jax.random.uniform(key, (num_valid.shape[0], seq_len), jnp.float32, 0.0, max_length)
    rows = jnp.sort(jnp.where(t < num_valid[:, None], uniform_BxT, jnp.inf), axis=1)
    return _continue_padding(rows, num_valid)

  return sample


def _random_or_contiguous(make):
  """Factory: the random sampler `make(L_max)` at training (and at evaluation when
  `resample_at_eval`), contiguous positions at evaluation otherwise."""

  def factory(config, training: bool) -> PositionSampler:
    return make(config.max_length) if training or config.resample_at_eval else contiguous

  return factory


# name -> factory(positions_config, training) -> sampler.
SAMPLERS: dict[str, Callable[..., PositionSampler]] = {
    'contiguous': lambda config, training: contiguous,
    'randomized': _random_or_contiguous(randomized),
    'random_continuous': _random_or_contiguous(random_continuous),
}
# Samplers that draw positions from [0, positions.max_length).
RANDOM_SAMPLERS = ('randomized', 'random_continuous')


def samples_floats(config) -> bool:
  """Whether the sampler of `config` (an `encoding.positions` section) makes float positions."""
  return config.sampler == 'random_continuous'


def position_bound(config, longest_sequence: int) -> int:
  """An upper bound (exclusive) on the real positions a run hands the model: L_max for a
  random sampler, else the longest sequence (input plus answer slots)."""
  return max(config.max_length, longest_sequence) if config.sampler in RANDOM_SAMPLERS else longest_sequence


def evaluates_unseen_positions(config) -> bool:
  """Whether `config` (an `encoding.positions` section) trains on random positions but
  evaluates on 0..T-1 (`resample_at_eval=False`): positions the model may never have seen
  together, which is not how Ruoss et al. evaluate."""
  return config.sampler in RANDOM_SAMPLERS and not config.resample_at_eval


def make_sampler(config, training: bool) -> PositionSampler:
  """The sampler named by `config.sampler` (an `encoding.positions` config section) for
  training or evaluation."""
  if config.sampler not in SAMPLERS:
    raise ValueError(
        f'unknown position sampler {config.sampler!r}; known: {", ".join(sorted(SAMPLERS))}'
    )
  return SAMPLERS[config.sampler](config, training)
