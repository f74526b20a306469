"""Position samplers: the explicit positions handed to the model.

Positions are never an `arange` hidden inside a layer: a sampler makes them, per example,
for the whole sequence (input and answer slots), and every encoding reads them. This is
what lets randomized or scaled positions compose with any encoding.

A sampler is `sampler(key, num_valid int32[B], seq_len: int) -> positions[B, seq_len]`:
the first `num_valid[b]` entries of row b are the positions of the real tokens (strictly
increasing); the rest belong to padding and are never attended to.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

PositionSampler = Callable[[jax.Array, jax.Array, int], jax.Array]


def contiguous(key: jax.Array, num_valid: jax.Array, seq_len: int) -> jax.Array:
  """Positions 0, 1, ..., seq_len-1 for every example (the key is unused)."""
  del key
  return jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (num_valid.shape[0], seq_len))


# name -> factory(positions_config, training) -> sampler.
SAMPLERS: dict[str, Callable[..., PositionSampler]] = {
    'contiguous': lambda config, training: contiguous,
}


def make_sampler(config, training: bool) -> PositionSampler:
  """The sampler named by `config.sampler` (an `encoding.positions` config section) for
  training or evaluation."""
  if config.sampler not in SAMPLERS:
    raise ValueError(
        f'unknown position sampler {config.sampler!r}; known: {", ".join(sorted(SAMPLERS))}'
    )
  return SAMPLERS[config.sampler](config, training)
