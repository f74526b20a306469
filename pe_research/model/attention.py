"""Multi-head self-attention, and `attend`, the one function all attention goes through.

    q, k  = encoding.rotate(x W_q, x W_k, p, p)
    terms = encoding.attention_terms(q, k, p, p)
    out   = attend(q, k, x W_v, mask, terms) W_o
    attend: softmax(terms.scores(q k^T / sqrt(d_head)) | mask) v  (+ terms.value)

Positions `p` are passed in explicitly; `mask` (broadcastable to [B, H, T, S]) is True where
a query may attend to a key, and `causal=True` also hides the future. `terms` is an
`AttentionTerms` description of what the encoding adds (`pe_research.encodings.base`):
nothing, a distance bias, a [B, H, T, S] array, a function of the logits, a term on the
values. Reusable on its own: any model that gives it inputs, positions and a mask can use
every encoding.

Backends: `attend` chooses from the description alone. Where the terms add nothing to the
logits but, possibly, a `DistanceBias` (no array, no score or value function) and the mask
is a padding mask ([B, 1, 1, S]), softmax attention runs in one fused kernel on a CPU
(`kernels.fused_softmax_attention`), which computes the distance bias itself and forms no
[T, S] logits. Otherwise, and off the CPU, the logits are formed in XLA
(`kernels.query_key_logits`, `kernels.softmax_values`, with backward passes written for
small heads). Both agree to float rounding. A subclass that changes a term changes the
description, so its term always runs.

Blockwise evaluation: with `query_block=n`, the queries are cut into blocks of n and
`lax.map` walks them; each block computes its rotations, attention terms, causal mask and
softmax from its own positions against all keys, so memory is O(B H n S) instead of
O(B H T S) while every term (CoPE's key-wise cumulative gates included) sees exactly what
full attention gives it. Results equal full attention to float rounding. With
`query_rows`, only the queries at those rows are computed (each example its own rows), the
same way: a model read at a few answer slots skips the other queries of its last layer.
"""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import AttentionTerms, DistanceBias, Encoding, NoPE
from pe_research.model import kernels
from pe_research.model.dense import Dense

NO_TERMS = AttentionTerms()


def attention_mask(valid_BxT: jax.Array, causal: bool) -> jax.Array:
  """bool[B, 1, T, T] (bool[B, 1, 1, T] if not causal): key j is visible to query i if j is
  a real token (and j <= i)."""
  mask = valid_BxT[:, None, None, :]
  if causal:
    length = valid_BxT.shape[1]
    mask = mask & jnp.tril(jnp.ones((length, length), bool))
  return mask


def causal_mask(mask_BxHxTxS: jax.Array, rows_BxT: jax.Array, num_keys: int) -> jax.Array:
  """`mask` with key j also hidden from each query t where j > rows[t]."""
  return mask_BxHxTxS & (rows_BxT[:, None, :, None] >= jnp.arange(num_keys))


def runs_fused(terms: AttentionTerms, mask: jax.Array) -> bool:
  """Whether `attend` hands these terms to the fused CPU kernel (where it is built): no
  score or value function, a bias that is nothing or a DistanceBias, a padding mask."""
  bias_is_distance = terms.bias is None or isinstance(terms.bias, DistanceBias)
  return terms.score is None and terms.value is None and bias_is_distance and mask.shape[1:3] == (1, 1)


def _heads_major(y_BxTxHxK: jax.Array) -> jax.Array:
  return y_BxTxHxK.swapaxes(1, 2)


def _logits(q_BxTxHxK, k_BxSxHxK, mask, terms, rows_BxT, causal):
  """(the logits with the terms [B, H, T, S], the mask with the future hidden if causal)."""
  # The scale goes on q ([B, T, H, K]) rather than on the larger logits.
  scaled_q_BxHxTxK = _heads_major(q_BxTxHxK) * (1 / math.sqrt(q_BxTxHxK.shape[-1]))
  if causal:
    mask = causal_mask(mask, rows_BxT, k_BxSxHxK.shape[1])
  return terms.scores(kernels.query_key_logits(scaled_q_BxHxTxK, _heads_major(k_BxSxHxK)), mask), mask


def _rows(q_BxTxHxK: jax.Array, rows_BxT: jax.Array | None) -> jax.Array:
  batch, queries = q_BxTxHxK.shape[:2]
  return jnp.broadcast_to(jnp.arange(queries), (batch, queries)) if rows_BxT is None else rows_BxT


def attend(q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array, mask: jax.Array,
           terms: AttentionTerms = NO_TERMS, *, rows_BxT: jax.Array | None = None, causal: bool = False) -> jax.Array:
  """Softmax attention [B, T, H, K] of unscaled q against k and v with the encoding's
  `terms` (module docstring). `mask` broadcasts to [B, H, T, S]; `causal` also hides key j
  from query t where j > rows[t] (`rows`: each query's row among the keys, by default
  0 .. T-1). The fused CPU kernel runs exactly where `runs_fused(terms, mask)`."""
  rows_BxT = _rows(q_BxTxHxK, rows_BxT)

  def in_xla(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK):
    logits_BxHxTxS, mask_BxHxTxS = _logits(q_BxTxHxK, k_BxSxHxK, mask, terms, rows_BxT, causal)
    if terms.value is None:
      return _heads_major(kernels.softmax_values(logits_BxHxTxS, _heads_major(v_BxSxHxK), mask_BxHxTxS))
    weights_BxHxTxS = kernels.masked_softmax(logits_BxHxTxS, mask_BxHxTxS).astype(v_BxSxHxK.dtype)
    return terms.values(weights_BxHxTxS, v_BxSxHxK)

  if not runs_fused(terms, mask):
    return in_xla(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK)

  def fused(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK):
    scaled_q_BxHxTxK = _heads_major(q_BxTxHxK) * (1 / math.sqrt(q_BxTxHxK.shape[-1]))
    return _heads_major(kernels.fused_softmax_attention(
        scaled_q_BxHxTxK, _heads_major(k_BxSxHxK), _heads_major(v_BxSxHxK), mask, rows_BxT, causal, terms.bias))

  return kernels.fused_where_possible(fused, in_xla, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK)


def attention_weights(q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, mask: jax.Array,
                      terms: AttentionTerms = NO_TERMS, *, rows_BxT: jax.Array | None = None,
                      causal: bool = False) -> jax.Array:
  """The weights [B, H, T, S] (float32) that `attend` with the same arguments gives the
  values, formed in XLA even where `attend` runs fused: for inspecting attention."""
  logits_BxHxTxS, mask_BxHxTxS = _logits(q_BxTxHxK, k_BxSxHxK, mask, terms, _rows(q_BxTxHxK, rows_BxT), causal)
  return kernels.masked_softmax(logits_BxHxTxS, mask_BxHxTxS)


def _blocks(y_BxT: jax.Array, block: int, fill) -> jax.Array:
  """[B, T, ...] -> [T / block, B, block, ...], padding T up to a multiple of block."""
  pad = -y_BxT.shape[1] % block
  y_BxT = jnp.pad(y_BxT, [(0, 0), (0, pad)] + [(0, 0)] * (y_BxT.ndim - 2), constant_values=fill)
  return jnp.moveaxis(y_BxT.reshape(y_BxT.shape[0], -1, block, *y_BxT.shape[2:]), 1, 0)


class MultiHeadAttention(nnx.Module):
  """Self-attention over `num_heads` heads of width model_dim / num_heads, with an
  encoding's hooks (NoPE by default). Its projections are `Dense` layers with operands in
  `matmul_dtype` ('float32' or 'bfloat16': mixed precision, see `pe_research.model.dense`);
  the attention itself (`attend`) is float32."""

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

    def attend_rows(q_BxTxHxK, q_positions_BxT, mask, rows_BxT):
      terms = self.encoding.attention_terms(q_BxTxHxK, k_BxSxHxK, q_positions_BxT, positions_BxT)
      return attend(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask, terms, rows_BxT=rows_BxT, causal=causal)

    num_rows = rows_BxO.shape[1]
    if query_block is None or query_block >= num_rows:
      out_BxOxHxK = attend_rows(q_BxOxHxK, q_positions_BxO, mask_BxHxTxS, rows_BxO)
    else:
      blocks = (
          _blocks(q_BxOxHxK, query_block, 0),
          _blocks(q_positions_BxO, query_block, 0),
          _blocks(mask_BxHxTxS.swapaxes(1, 2), query_block, False).swapaxes(2, 3) if per_row else None,
          _blocks(rows_BxO, query_block, length),
      )
      out = jax.lax.map(lambda b: attend_rows(b[0], b[1], b[2] if per_row else mask_BxHxTxS, b[3]), blocks)
      out_BxOxHxK = jnp.moveaxis(out, 0, 1).reshape(batch, -1, self.num_heads, self.head_dim)[:, :num_rows]
    return self.output(out_BxOxHxK.reshape(batch, num_rows, -1))

  def materializes_logits(self) -> bool:
    """Whether this layer, given a padding mask, forms [B, H, T, S] logits on JAX's default
    platform: everywhere but where its encoding's terms run in the fused CPU kernel
    (`runs_fused`, for float32 attention) and that kernel is built."""
    if jax.default_backend() != 'cpu' or not kernels.available():
      return True
    q = jax.ShapeDtypeStruct((1, 1, self.num_heads, self.head_dim), jnp.float32)
    positions = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    padding_mask = jax.ShapeDtypeStruct((1, 1, 1, 1), bool)
    fused = []  # The terms' kind, from shapes alone: nothing is computed.
    jax.eval_shape(lambda q, p: fused.append(runs_fused(self.encoding.attention_terms(q, q, p, p), padding_mask)),
                   q, positions)
    return not fused[0]


def materializes_logits(model: nnx.Module) -> bool:
  """Whether some `MultiHeadAttention` layer of `model` forms [B, H, T, S] logits on JAX's
  default platform (`MultiHeadAttention.materializes_logits`); evaluation sizes its blocks
  by it (`pe_research.evaluation.model_logit_budget`)."""
  return any(node.materializes_logits() for _, node in nnx.iter_graph(model) if isinstance(node, MultiHeadAttention))
