"""Multi-head self-attention with positional hooks (see `pe_research.encodings.base`).

    q, k = encoding.rotate(x W_q, x W_k, p, p)
    logits = encoding.scores(q k^T / sqrt(d_head), q, k, p, p, mask)
    out = encoding.values(softmax(logits masked), x W_v, p, p) W_o

Positions `p` are passed in explicitly; `mask` (broadcastable to [B, H, T, S]) is True where
a query may attend to a key, and `causal=True` also hides the future. With an encoding that
adds nothing to the logits or values, or only ALiBi's distance bias (`DistanceBias`), and
a padding mask ([B, 1, 1, S]), the softmax attention runs in one fused kernel on a CPU
(`attention_kernels.softmax_attention`), which computes that bias itself.
Reusable on its own: any model that gives it inputs, positions and a mask can use every
encoding.

Blockwise evaluation: with `query_block=n`, the queries are cut into blocks of n and
`lax.map` walks them; each block computes its rotations, position biases, causal mask and
softmax from its own positions against all keys, so memory is O(B H n S) instead of
O(B H T S) while every hook (CoPE's key-wise cumulative gates included) sees exactly what
full attention gives it. Results equal full attention to float rounding. With
`query_rows`, only the queries at those rows are computed (each example its own rows), the
same way: a model read at a few answer slots skips the other queries of its last layer.
"""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Encoding, NoPE
from pe_research.model import cpu_kernels
from pe_research.model.dense import Dense
from pe_research.model.attention_kernels import (
    causal_mask, masked_softmax, query_key_logits, softmax_attention, softmax_values)


def attention_mask(valid_BxT: jax.Array, causal: bool) -> jax.Array:
  """bool[B, 1, T, T] (bool[B, 1, 1, T] if not causal): key j is visible to query i if j is
  a real token (and j <= i)."""
  mask = valid_BxT[:, None, None, :]
  if causal:
    length = valid_BxT.shape[1]
    mask = mask & jnp.tril(jnp.ones((length, length), bool))
  return mask


def _heads_major(y_BxTxHxK: jax.Array) -> jax.Array:
  return y_BxTxHxK.swapaxes(1, 2)


def _blocks(y_BxT: jax.Array, block: int, fill) -> jax.Array:
  """[B, T, ...] -> [T / block, B, block, ...], padding T up to a multiple of block."""
  pad = -y_BxT.shape[1] % block
  y_BxT = jnp.pad(y_BxT, [(0, 0), (0, pad)] + [(0, 0)] * (y_BxT.ndim - 2), constant_values=fill)
  return jnp.moveaxis(y_BxT.reshape(y_BxT.shape[0], -1, block, *y_BxT.shape[2:]), 1, 0)


class MultiHeadAttention(nnx.Module):
  """Self-attention over `num_heads` heads of width model_dim / num_heads. Its projections
  are `Dense` layers with operands in `matmul_dtype` ('float32' or 'bfloat16': mixed
  precision, see `pe_research.model.dense`); the attention itself is float32."""

  def __init__(self, model_dim: int, num_heads: int, *, rngs: nnx.Rngs, encoding: Encoding | None = None,
               matmul_dtype='float32'):
    if num_heads <= 0 or model_dim % num_heads:
      raise ValueError(f'num_heads={num_heads} must be positive and divide model_dim={model_dim}')
    self.num_heads = num_heads
    self.head_dim = model_dim // num_heads
    linear = lambda: Dense(model_dim, model_dim, use_bias=False, matmul_dtype=matmul_dtype, rngs=rngs)  # noqa: E731
    self.query, self.key, self.value, self.output = linear(), linear(), linear(), linear()
    self.encoding = encoding if encoding is not None else NoPE()

  def __call__(self, x_BxTxD: jax.Array, positions_BxT: jax.Array, mask: jax.Array, *, causal: bool = False,
               query_block: int | None = None, query_rows_BxO: jax.Array | None = None) -> jax.Array:
    """x [B, T, D] -> [B, T, D]. `mask` broadcasts to [B, H, T, T]; `causal` hides keys
    after the query; `query_block` (optional) bounds the queries attended at once;
    `query_rows` (optional, [B, O] indices into T) computes only those queries, against
    every key, and returns [B, O, D] (a last layer read only at the answer slots)."""
    batch, length, _ = x_BxTxD.shape
    split = lambda y: y.reshape(batch, y.shape[1], self.num_heads, self.head_dim)  # noqa: E731
    per_row = mask.shape[2] > 1  # A mask with a row per query is cut with them.
    mask_BxHxTxS = jnp.broadcast_to(mask, (batch, mask.shape[1], length, length)) if per_row else mask
    if query_rows_BxO is None:
      rows_BxO, x_BxOxD, q_positions_BxO = jnp.broadcast_to(jnp.arange(length), (batch, length)), x_BxTxD, positions_BxT
    else:
      rows_BxO = query_rows_BxO
      x_BxOxD = jnp.take_along_axis(x_BxTxD, rows_BxO[:, :, None], axis=1)
      q_positions_BxO = jnp.take_along_axis(positions_BxT, rows_BxO, axis=1)
      mask_BxHxTxS = jnp.take_along_axis(mask_BxHxTxS, rows_BxO[:, None, :, None], axis=2) if per_row else mask_BxHxTxS
    q_BxOxHxK = split(self.query(x_BxOxD))
    k_BxSxHxK, v_BxSxHxK = split(self.key(x_BxTxD)), split(self.value(x_BxTxD))
    q_BxOxHxK, k_BxSxHxK = self.encoding.rotate(q_BxOxHxK, k_BxSxHxK, q_positions_BxO, positions_BxT)
    attend = lambda q, p, m, r: self._attend(q, k_BxSxHxK, v_BxSxHxK, p, positions_BxT, m, r, causal)  # noqa: E731
    num_rows = rows_BxO.shape[1]
    if query_block is None or query_block >= num_rows:
      out_BxOxHxK = attend(q_BxOxHxK, q_positions_BxO, mask_BxHxTxS, rows_BxO)
    else:
      blocks = (
          _blocks(q_BxOxHxK, query_block, 0),
          _blocks(q_positions_BxO, query_block, 0),
          _blocks(mask_BxHxTxS.swapaxes(1, 2), query_block, False).swapaxes(2, 3) if per_row else None,
          _blocks(rows_BxO, query_block, length),
      )
      out = jax.lax.map(lambda b: attend(b[0], b[1], b[2] if per_row else mask_BxHxTxS, b[3]), blocks)
      out_BxOxHxK = jnp.moveaxis(out, 0, 1).reshape(batch, -1, self.num_heads, self.head_dim)[:, :num_rows]
    return self.output(out_BxOxHxK.reshape(batch, num_rows, -1))

  def _attend(self, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_positions_BxT, k_positions_BxS, mask_BxHxTxS, rows_BxT, causal):
    # The scale goes on q ([B, T, H, K]) rather than on the larger logits.
    scaled_q_BxHxTxK = _heads_major(q_BxTxHxK) * (1 / math.sqrt(self.head_dim))
    if _plain_or_distance_bias(type(self.encoding)) and mask_BxHxTxS.shape[1:3] == (1, 1):
      return _heads_major(softmax_attention(
          scaled_q_BxHxTxK, _heads_major(k_BxSxHxK), _heads_major(v_BxSxHxK), mask_BxHxTxS, rows_BxT,
          q_positions_BxT, k_positions_BxS, causal, self.encoding.distance_bias()))
    if causal:
      mask_BxHxTxS = causal_mask(mask_BxHxTxS, rows_BxT, k_BxSxHxK.shape[1])
    logits_BxHxTxS = query_key_logits(scaled_q_BxHxTxK, _heads_major(k_BxSxHxK))
    logits_BxHxTxS = self.encoding.scores(
        logits_BxHxTxS, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS, mask_BxHxTxS
    )
    if type(self.encoding).values is Encoding.values:  # No positional term on the values.
      return _heads_major(softmax_values(logits_BxHxTxS, _heads_major(v_BxSxHxK), mask_BxHxTxS))
    weights_BxHxTxS = masked_softmax(logits_BxHxTxS, mask_BxHxTxS).astype(v_BxSxHxK.dtype)
    return self.encoding.values(weights_BxHxTxS, v_BxSxHxK, q_positions_BxT, k_positions_BxS)


def _plain_or_distance_bias(encoding_type: type[Encoding]) -> bool:
  """Whether the encoding puts nothing on the logits or the values (it acts, if at all, on
  the input or on q and k) but, possibly, a DistanceBias (ALiBi): attention is then
  `softmax_attention`, fused on a CPU."""
  bias_is_distance = encoding_type.bias is Encoding.bias or encoding_type.distance_bias is not Encoding.distance_bias
  return encoding_type.scores is Encoding.scores and encoding_type.values is Encoding.values and bias_is_distance


def fused_on_cpu(encoding_type: type[Encoding]) -> bool:
  """Whether attention with this encoding runs in the fused kernel on a CPU (then no
  [T, S] logits are ever materialized; float32 models)."""
  return _plain_or_distance_bias(encoding_type) and cpu_kernels.available()
