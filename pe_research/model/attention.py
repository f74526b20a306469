"""Multi-head self-attention with positional hooks (see `pe_research.encodings.base`).

    q, k = encoding.rotate(x W_q, x W_k, p, p)
    logits = encoding.scores(q k^T / sqrt(d_head), q, k, p, p, mask)
    out = encoding.values(softmax(logits masked), x W_v, p, p) W_o

Positions `p` are passed in explicitly; `mask` [B, 1 or H, T, S] is True where a query may
attend to a key (padding and, for causal models, the future are False). Reusable on its
own: any model that gives it inputs, positions and a mask can use every encoding.
"""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Encoding, NoPE

# Large finite negative for masked logits: -inf would give NaN gradients on empty rows.
MASKED_LOGIT = -1e9


def attention_mask(valid_BxT: jax.Array, causal: bool) -> jax.Array:
  """bool[B, 1, T, T]: key j is visible to query i if j is a real token (and j <= i)."""
  mask = valid_BxT[:, None, None, :]
  if causal:
    length = valid_BxT.shape[1]
    mask = mask & jnp.tril(jnp.ones((length, length), bool))
  return mask


class MultiHeadAttention(nnx.Module):
  """Self-attention over `num_heads` heads of width model_dim / num_heads."""

  def __init__(self, model_dim: int, num_heads: int, *, rngs: nnx.Rngs, encoding: Encoding | None = None):
    if num_heads <= 0 or model_dim % num_heads:
      raise ValueError(f'num_heads={num_heads} must be positive and divide model_dim={model_dim}')
    self.num_heads = num_heads
    self.head_dim = model_dim // num_heads
    linear = lambda: nnx.Linear(model_dim, model_dim, use_bias=False, rngs=rngs)  # noqa: E731
    self.query, self.key, self.value, self.output = linear(), linear(), linear(), linear()
    self.encoding = encoding if encoding is not None else NoPE()

  def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array, mask_BxHxTxS: jax.Array) -> jax.Array:
    batch, length, _ = x_BxTxD.shape
    split = lambda y: y.reshape(batch, length, self.num_heads, self.head_dim)  # noqa: E731
    q_BxTxHxK, k_BxSxHxK, v_BxSxHxK = (split(f(x_BxTxD)) for f in (self.query, self.key, self.value))
    q_BxTxHxK, k_BxSxHxK = self.encoding.rotate(q_BxTxHxK, k_BxSxHxK, positions_BxT, positions_BxT)
    logits_BxHxTxS = jnp.einsum('bthk,bshk->bhts', q_BxTxHxK, k_BxSxHxK) / math.sqrt(self.head_dim)
    logits_BxHxTxS = self.encoding.scores(
        logits_BxHxTxS, q_BxTxHxK, k_BxSxHxK, positions_BxT, positions_BxT, mask_BxHxTxS
    )
    logits_BxHxTxS = jnp.where(mask_BxHxTxS, logits_BxHxTxS, MASKED_LOGIT)
    weights_BxHxTxS = jax.nn.softmax(logits_BxHxTxS.astype(jnp.float32), axis=-1).astype(x_BxTxD.dtype)
    out_BxTxHxK = self.encoding.values(weights_BxHxTxS, v_BxSxHxK, positions_BxT, positions_BxT)
    return self.output(out_BxTxHxK.reshape(batch, length, -1))
