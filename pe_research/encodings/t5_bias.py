"""T5 relative position bias (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer").

A learned scalar per head and bucket of the offset r = j - i (key minus query) is added to
the logits: logits_h[i, j] += W[bucket(j - i), h]. With n = i - j:
  * bidirectional: nb = num_buckets / 2, ret = nb * [n < 0], n = |n|;
  * causal: nb = num_buckets, ret = 0, n = max(n, 0);
  * max_exact = nb / 2; bucket = ret + n if n < max_exact, else
    ret + min(nb - 1, max_exact + floor(log(n / max_exact) / log(max_distance / max_exact)
    * (nb - max_exact))).
As flaxformer/Mesh-TF/HF T5. Convention: one table per layer (T5 shares one across
layers); float offsets are floored.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, relative_offsets


def t5_buckets(relative_position: jax.Array, causal: bool, num_buckets: int = 32, max_distance: int = 128) -> jax.Array:
  """Bucket ids of key-minus-query offsets `relative_position` (int32, any shape)."""
  n = -jnp.floor(jnp.asarray(relative_position, jnp.float32)).astype(jnp.int32)
  if causal:
    nb, ret = num_buckets, jnp.zeros_like(n)
    n = jnp.maximum(n, 0)
  else:
    nb = num_buckets // 2
    ret = nb * (n < 0).astype(jnp.int32)
    n = jnp.abs(n)
  max_exact = nb // 2
  log_ratio = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact + jnp.finfo(jnp.float32).eps)
  large = max_exact + (log_ratio / jnp.log(max_distance / max_exact) * (nb - max_exact)).astype(jnp.int32)
  return ret + jnp.where(n < max_exact, n, jnp.minimum(large, nb - 1))


class T5Bias(Encoding):
  """A learned bias per head and log-spaced bucket of the relative offset."""

  acts_on_attention = True
  section = 't5'
  options = {
      # Number of relative-offset buckets. 32: T5's (Raffel et al. 2020), flaxformer's default.
      'num_buckets': 32,
      # Offsets beyond this share the last bucket. 128: T5's, flaxformer's default.
      'max_distance': 128,
  }

  def __init__(self, num_heads: int, causal: bool, rngs: nnx.Rngs, num_buckets: int = 32, max_distance: int = 128):
    self.causal = causal
    self.num_buckets = num_buckets
    self.max_distance = max_distance
    self.table = nnx.Embed(num_buckets, num_heads, embedding_init=nnx.initializers.zeros_init(), rngs=rngs)

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    t5 = config.t5
    # The bucket function needs one exact bucket at least (half the buckets, a quarter when
    # bidirectional) and log-spaced ones beyond it, up to max_distance.
    least = 2 if dims.causal else 4
    if t5.num_buckets < least:
      raise ValueError(f'config.encoding.t5.num_buckets={t5.num_buckets} is too few for '
                       f'{"causal" if dims.causal else "bidirectional"} attention; allowed: >= {least}')
    exact = (t5.num_buckets if dims.causal else t5.num_buckets // 2) // 2
    if t5.max_distance <= exact:
      raise ValueError(f'config.encoding.t5.max_distance={t5.max_distance} must exceed the {exact} offsets that '
                       f'have a bucket each; allowed: > {exact}')

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    return cls(dims.num_heads, dims.causal, rngs, config.t5.num_buckets, config.t5.max_distance)

  def bias(self, q_positions_BxT, k_positions_BxS):
    offsets = -relative_offsets(q_positions_BxT, k_positions_BxS)  # j - i
    buckets = t5_buckets(offsets, self.causal, self.num_buckets, self.max_distance)
    return jnp.moveaxis(self.table(buckets), -1, 1)  # [B, H, T, S]
