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

Scaling (`LogitScale`, config `model.attention_scale`): q.k / sqrt(d_head) by default;
also no scaling, and Scalable-Softmax's length-dependent factor s_h log n. Inspection:
`attention_logits` and `attention_weights` give what the softmax sees and gives, and
`attend(..., capture=True)` returns the weights it applied with its output (in XLA: the
fused kernel forms no weights); `MultiHeadAttention` sows them when viewed with
`nnx.view(model, capture_weights=True)`.
"""

import dataclasses
import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import AttentionTerms, DistanceBias, Encoding, NoPE
from pe_research.model import kernels
from pe_research.model.dense import Dense

NO_TERMS = AttentionTerms()

# The values of `model.attention_scale` (`LogitScale`).
ATTENTION_SCALES = ('sqrt_dk', 'none', 'log_length')


@dataclasses.dataclass(frozen=True, eq=False)
class LogitScale:
  """How attention scales its logits before the softmax (config `model.attention_scale`):

      'sqrt_dk'     z = q.k / sqrt(K) + b                    (Vaswani et al. 2017)
      'none'        z = q.k + b
      'log_length'  z = s_h log(n) (q.k / sqrt(K) + b)       (Scalable-Softmax)

  b: what the encoding adds (`AttentionTerms`: a bias, then a score function). With
  'sqrt_dk' the logits of i.i.d. unit-variance q and k have unit variance at any head width
  K, so the softmax does not saturate as K grows (their q.k has variance K). 'log_length'
  is Scalable-Softmax (SSMax, Nakanishi 2025, arXiv 2501.19399; with a fixed s, Chiang and
  Cholak 2022, arXiv 2202.12172): n is the number of keys the query sees (its mask row: in
  a causal model its row + 1, else the real tokens), so the logits sharpen as log n and
  attention does not flatten on long inputs; `s` [H] holds one learned scalar per head.

  Convention: SSMax multiplies the whole logit, the encoding's bias and score terms
  included, as its softmax(s log(n) z) of the logits z says; so does `attention_logits`
  (the XLA path). The fused CPU kernel forms no logits: it takes the factor folded into q,
  which is exact only where the encoding adds nothing to q.k, so a 'log_length' layer whose
  encoding adds a term (ALiBi's distance bias too) runs in XLA (`runs_fused`). 'none' keeps
  the bias at its own scale: z = q.k + b, in both paths.
  """

  kind: str = 'sqrt_dk'
  s_H: jax.Array | None = None

  @property
  def scales_with_length(self) -> bool:
    """Whether the factor depends on the query's keys ('log_length')."""
    return self.kind == 'log_length'

  def query_factor(self, head_dim: int) -> float:
    """The constant on q: 1 / sqrt(K), or 1 for 'none'."""
    return 1.0 if self.kind == 'none' else 1 / math.sqrt(head_dim)

  def length_factor(self, visible_BxHxTxS: jax.Array) -> jax.Array | None:
    """s_h log(n) [B, H, T, 1] ('log_length') for the mask of the keys each query sees
    (the future hidden if causal; broadcastable to [B, H, T, S]); None for the others."""
    if not self.scales_with_length:
      return None
    n_BxHxTx1 = jnp.sum(visible_BxHxTxS, axis=-1, keepdims=True, dtype=jnp.float32)
    # A query that sees no key (a padding row) gets log 1 = 0, not -inf.
    return self.s_H[None, :, None, None] * jnp.log(jnp.maximum(n_BxHxTx1, 1.0))


SQRT_DK = LogitScale()


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


def runs_fused(terms: AttentionTerms, mask: jax.Array, scale: LogitScale = SQRT_DK) -> bool:
  """Whether `attend` hands these terms to the fused CPU kernel (where it is built): no
  score or value function, a bias that is nothing or a DistanceBias, a padding mask, and
  no bias under a 'log_length' scale (the factor multiplies the bias too, which the kernel
  cannot; `LogitScale`)."""
  bias_is_distance = terms.bias is None or isinstance(terms.bias, DistanceBias)
  scalable = not scale.scales_with_length or terms.bias is None
  return terms.score is None and terms.value is None and bias_is_distance and scalable and mask.shape[1:3] == (1, 1)


def _heads_major(y_BxTxHxK: jax.Array) -> jax.Array:
  return y_BxTxHxK.swapaxes(1, 2)


def _rows(q_BxTxHxK: jax.Array, rows_BxT: jax.Array | None) -> jax.Array:
  batch, queries = q_BxTxHxK.shape[:2]
  return jnp.broadcast_to(jnp.arange(queries), (batch, queries)) if rows_BxT is None else rows_BxT


def _visible(mask: jax.Array, rows_BxT: jax.Array, causal: bool, num_keys: int) -> jax.Array:
  """The keys each query sees: `mask`, with the future hidden if causal."""
  return causal_mask(mask, rows_BxT, num_keys) if causal else mask


def attention_logits(q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, mask: jax.Array,
                     terms: AttentionTerms = NO_TERMS, *, rows_BxT: jax.Array | None = None, causal: bool = False,
                     scale: LogitScale = SQRT_DK) -> tuple[jax.Array, jax.Array]:
  """(the logits [B, H, T, S] that the softmax of `attend` with the same arguments reads,
  the mask of the keys each query sees, broadcastable to them). Masked entries are not
  filled: the softmax adds `kernels.MASKED_LOGIT` there."""
  # The constant goes on q ([B, T, H, K]) rather than on the larger logits.
  scaled_q_BxHxTxK = _heads_major(q_BxTxHxK) * scale.query_factor(q_BxTxHxK.shape[-1])
  visible = _visible(mask, _rows(q_BxTxHxK, rows_BxT), causal, k_BxSxHxK.shape[1])
  logits_BxHxTxS = terms.scores(kernels.query_key_logits(scaled_q_BxHxTxK, _heads_major(k_BxSxHxK)), visible)
  factor_BxHxTx1 = scale.length_factor(visible)
  return logits_BxHxTxS if factor_BxHxTx1 is None else factor_BxHxTx1 * logits_BxHxTxS, visible


def attention_weights(q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, mask: jax.Array,
                      terms: AttentionTerms = NO_TERMS, *, rows_BxT: jax.Array | None = None,
                      causal: bool = False, scale: LogitScale = SQRT_DK) -> jax.Array:
  """The weights [B, H, T, S] (float32) that `attend` with the same arguments gives the
  values: the masked softmax of `attention_logits`, formed in XLA even where `attend` runs
  fused (for inspecting attention)."""
  logits_BxHxTxS, visible = attention_logits(q_BxTxHxK, k_BxSxHxK, mask, terms, rows_BxT=rows_BxT, causal=causal,
                                             scale=scale)
  return kernels.masked_softmax(logits_BxHxTxS, visible)


def attend(q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array, mask: jax.Array,
           terms: AttentionTerms = NO_TERMS, *, rows_BxT: jax.Array | None = None, causal: bool = False,
           scale: LogitScale = SQRT_DK, capture: bool = False):
  """Softmax attention [B, T, H, K] of unscaled q against k and v with the encoding's
  `terms` (module docstring), its logits scaled as `scale` says. `mask` broadcasts to
  [B, H, T, S]; `causal` also hides key j from query t where j > rows[t] (`rows`: each
  query's row among the keys, by default 0 .. T-1). The fused CPU kernel runs exactly where
  `runs_fused(terms, mask, scale)` and `capture` is False.

  With `capture=True`: (the output, the weights [B, H, T, S] it applied), formed in XLA
  (`attention_weights`): the weights are those the output is made of, not a recomputation."""
  rows_BxT = _rows(q_BxTxHxK, rows_BxT)

  def with_weights(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK):
    weights_BxHxTxS = attention_weights(q_BxTxHxK, k_BxSxHxK, mask, terms, rows_BxT=rows_BxT, causal=causal,
                                        scale=scale)
    return terms.values(weights_BxHxTxS.astype(v_BxSxHxK.dtype), v_BxSxHxK), weights_BxHxTxS

  if capture:
    return with_weights(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK)

  def in_xla(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK):
    if terms.value is not None:
      return with_weights(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK)[0]
    logits_BxHxTxS, visible = attention_logits(q_BxTxHxK, k_BxSxHxK, mask, terms, rows_BxT=rows_BxT, causal=causal,
                                               scale=scale)
    return _heads_major(kernels.softmax_values(logits_BxHxTxS, _heads_major(v_BxSxHxK), visible))

  if not runs_fused(terms, mask, scale):
    return in_xla(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK)

  def fused(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK):
    scaled_q_BxHxTxK = _heads_major(q_BxTxHxK) * scale.query_factor(q_BxTxHxK.shape[-1])
    if scale.scales_with_length:  # No bias here (`runs_fused`): the factor on q is exact.
      scaled_q_BxHxTxK = scale.length_factor(_visible(mask, rows_BxT, causal, k_BxSxHxK.shape[1])) * scaled_q_BxHxTxK
    return _heads_major(kernels.fused_softmax_attention(
        scaled_q_BxHxTxK, _heads_major(k_BxSxHxK), _heads_major(v_BxSxHxK), mask, rows_BxT, causal, terms.bias))

  return kernels.fused_where_possible(fused, in_xla, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK)


def _blocks(y_BxT: jax.Array, block: int, fill) -> jax.Array:
  """[B, T, ...] -> [T / block, B, block, ...], padding T up to a multiple of block."""
  pad = -y_BxT.shape[1] % block
  y_BxT = jnp.pad(y_BxT, [(0, 0), (0, pad)] + [(0, 0)] * (y_BxT.ndim - 2), constant_values=fill)
  return jnp.moveaxis(y_BxT.reshape(y_BxT.shape[0], -1, block, *y_BxT.shape[2:]), 1, 0)


class MultiHeadAttention(nnx.Module):
  """Self-attention over `num_heads` heads of width model_dim / num_heads, with an
  encoding's hooks (NoPE by default). Its projections are `Dense` layers with operands in
  `matmul_dtype` ('float32' or 'bfloat16': mixed precision, see `pe_research.model.dense`);
  the attention itself (`attend`) is float32.

  `attention_scale` ('sqrt_dk', 'none' or 'log_length', see `LogitScale`): with
  'log_length' the layer learns s [H], initialised to 1 / log(train_length) so that
  s log n = 1 at the longest training sequence (`train_length` tokens), where the layer then
  starts as the 'sqrt_dk' one (Nakanishi 2025 initialise s to about that).

  Inspection: in the view `nnx.view(layer, capture_weights=True)` every call also sows the
  weights it applied ([B, H, T, S], T its queries) as `nnx.Intermediate` 'attention_weights',
  for `nnx.capture`; attention then runs in XLA, which gives the same output to float
  rounding."""

  # Set through `nnx.view(model, capture_weights=True)` (`set_view`).
  capture_weights: bool = False

  def __init__(self, model_dim: int, num_heads: int, *, rngs: nnx.Rngs, encoding: Encoding | None = None,
               matmul_dtype='float32', attention_scale: str = 'sqrt_dk', train_length: int = 0):
    if num_heads <= 0 or model_dim % num_heads:
      raise ValueError(f'num_heads={num_heads} must be positive and divide model_dim={model_dim}')
    if attention_scale not in ATTENTION_SCALES:
      raise ValueError(f'attention_scale={attention_scale!r}; allowed: {", ".join(ATTENTION_SCALES)}')
    if attention_scale == 'log_length' and train_length < 2:
      raise ValueError(f"attention_scale='log_length' starts s at 1 / log(train_length) and needs train_length >= 2, "
                       f'got {train_length}')
    self.num_heads = num_heads
    self.head_dim = model_dim // num_heads
    linear = lambda: Dense(model_dim, model_dim, use_bias=False, matmul_dtype=matmul_dtype, rngs=rngs)  # noqa: E731
    self.query, self.key, self.value, self.output = linear(), linear(), linear(), linear()
    self.encoding = encoding if encoding is not None else NoPE()
    self.attention_scale = attention_scale
    if attention_scale == 'log_length':
      self.length_scale = nnx.Param(jnp.full((num_heads,), 1 / math.log(train_length), jnp.float32))

  def set_view(self, capture_weights: bool | None = None) -> None:
    """Called by `nnx.view`; `capture_weights=True` sows the attention weights."""
    if capture_weights is not None:
      self.capture_weights = capture_weights

  def logit_scale(self) -> LogitScale:
    """This layer's `LogitScale`, with its learned s under 'log_length'."""
    s_H = self.length_scale[...] if self.attention_scale == 'log_length' else None
    return LogitScale(self.attention_scale, s_H)

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

    scale = self.logit_scale()

    def attend_rows(q_BxTxHxK, q_positions_BxT, mask, rows_BxT, capture=False):
      terms = self.encoding.attention_terms(q_BxTxHxK, k_BxSxHxK, q_positions_BxT, positions_BxT)
      return attend(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask, terms, rows_BxT=rows_BxT, causal=causal, scale=scale,
                    capture=capture)

    num_rows = rows_BxO.shape[1]
    if self.capture_weights:
      if query_block is not None and query_block < num_rows:
        raise ValueError('capturing attention weights needs all queries at once; allowed: query_block=None')
      out_BxOxHxK, weights_BxHxOxS = attend_rows(q_BxOxHxK, q_positions_BxO, mask_BxHxTxS, rows_BxO, capture=True)
      self.sow(nnx.Intermediate, 'attention_weights', weights_BxHxOxS)
    elif query_block is None or query_block >= num_rows:
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
    jax.eval_shape(lambda q, p: fused.append(
        runs_fused(self.encoding.attention_terms(q, q, p, p), padding_mask, self.logit_scale())), q, positions)
    return not fused[0]


def materializes_logits(model: nnx.Module) -> bool:
  """Whether some `MultiHeadAttention` layer of `model` forms [B, H, T, S] logits on JAX's
  default platform (`MultiHeadAttention.materializes_logits`); evaluation sizes its blocks
  by it (`pe_research.evaluation.model_logit_budget`)."""
  return any(node.materializes_logits() for _, node in nnx.iter_graph(model) if isinstance(node, MultiHeadAttention))
