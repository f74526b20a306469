"""Learned absolute positions (Gehring et al. 2017; GPT, BERT): x + E[p], E in R^{N x D}.

A table of `max_length` rows: it has no row for a position it never saw, so asking for
one is an error (checked here on concrete positions, and on the config before a run). With
the randomized sampler the table must cover [0, positions.max_length); float positions
('random_continuous') are refused.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding
from pe_research.positions import position_bound


class Learned(Encoding):
  """Adds a learned embedding of each (integer) position to the token embeddings."""

  acts_on_input = True
  float_positions = False
  section = 'learned'
  options = {
      # Rows of the learned position table; must exceed every evaluated position. 256: our
      # choice, twice the default run's longest sequence (128 tokens: 64 input plus 64 answer
      # slots); `check_config` refuses a table a run outgrows (`:paper` sets 2048). The rows are
      # drawn at random, so runs with other table sizes start from other values.
      'max_length': 256,
  }

  def __init__(self, max_length: int, dim: int, rngs: nnx.Rngs):
    self.max_length = max_length
    self.table = nnx.Embed(max_length, dim, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    if config.learned.max_length < longest_sequence:
      raise ValueError(
          f'config.encoding.learned.max_length={config.learned.max_length} is smaller than the '
          f'longest sequence the run uses ({longest_sequence} tokens, input plus answer slots); '
          f'allowed: >= {longest_sequence}'
      )
    positions = config.get('positions')
    if positions is not None and config.learned.max_length < position_bound(positions, longest_sequence):
      raise ValueError(
          f'config.encoding.learned.max_length={config.learned.max_length} does not cover the positions of '
          f'sampler {positions.sampler!r}, drawn from [0, config.encoding.positions.max_length='
          f'{positions.max_length}); allowed: >= {position_bound(positions, longest_sequence)}'
      )

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(config.learned.max_length, dims.model_dim, rngs)

  def embed(self, x_BxTxD, positions_BxT):
    if not jnp.issubdtype(positions_BxT.dtype, jnp.integer):
      raise ValueError(f'learned encoding needs integer positions, got {positions_BxT.dtype}')
    if not isinstance(positions_BxT, jax.core.Tracer) and positions_BxT.size:
      largest = int(positions_BxT.max())
      if largest >= self.max_length:
        raise ValueError(
            f'learned encoding has max_length={self.max_length} rows but was asked for '
            f'position {largest}; allowed positions are 0..{self.max_length - 1}'
        )
    # Padding may sit past the table; it is never attended to, so clamp rather than read
    # NaN from an out-of-range gather. Real positions were checked against the config.
    return x_BxTxD + self.table(jnp.minimum(positions_BxT, self.max_length - 1))
