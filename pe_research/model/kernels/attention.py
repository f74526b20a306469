"""Attention's kernels: its two contractions in XLA with a backward pass laid out for small
heads, and the entry to the fused CPU kernel (`cpu_attention`).

    logits = q k^T                      (query_key_logits)
    out    = softmax(logits | mask) v   (softmax_values; masked logits count as -inf)

Both work on the heads-major layout [B, H, T, K]. Their gradients are written by hand: with
the head widths of this field (K = 8 .. 32), XLA:CPU computes a contraction over the
query axis of a [B, H, T, S] tensor (k's gradient ds^T q, v's gradient p^T do) slower
than the same product formed as (q^T ds)^T, which transposes only the small
[B, H, T, K] operand; `optimization_barrier` keeps the compiler from folding the transposes
back. softmax_values applies the mask itself and normalizes last, as FlashAttention does
(Dao et al. 2022): out = (e v) / l with e = exp(logits - rowmax) and the row sums l taken
by the same contraction (a column of ones appended to v), so no pass over the [T, S]
logits divides. It keeps e for its backward (ds = p (dp - rowsum(do o)) with p = e / l,
formed from do / l), which is already 0 at masked entries: no pass through exp, the
normalization or the mask select (what each bought: docs/performance.md). Values equal
plain autodiff to float rounding (tests/test_model.py).

`fused_softmax_attention` is the whole of softmax attention in one C++ call on a CPU
(`cpu_attention`), for attention that adds nothing to the logits but, possibly, a distance
bias. `pe_research.model.attention.attend` chooses between them.
"""

import jax
import jax.numpy as jnp

from pe_research.encodings.base import DistanceBias
from pe_research.model.kernels import cpu_attention


def _transpose_product(a_BxHxTxX: jax.Array, b_BxHxTxY: jax.Array) -> jax.Array:
  """a^T b over the T axis, [B, H, X, Y], by materializing the transposed a first."""
  a_BxHxXxT = jax.lax.optimization_barrier(a_BxHxTxX.swapaxes(-1, -2))
  return jax.lax.optimization_barrier(jnp.einsum('bhxt,bhty->bhxy', a_BxHxXxT, b_BxHxTxY))


@jax.custom_vjp
def query_key_logits(q_BxHxTxK: jax.Array, k_BxHxSxK: jax.Array) -> jax.Array:
  """[B, H, T, S] dot products q_t . k_s (unscaled)."""
  return jnp.einsum('bhtk,bhsk->bhts', q_BxHxTxK, k_BxHxSxK)


def _query_key_forward(q_BxHxTxK, k_BxHxSxK):
  return query_key_logits(q_BxHxTxK, k_BxHxSxK), (q_BxHxTxK, k_BxHxSxK)


def _query_key_backward(residuals, dlogits_BxHxTxS):
  q_BxHxTxK, k_BxHxSxK = residuals
  dq_BxHxTxK = jnp.einsum('bhts,bhsk->bhtk', dlogits_BxHxTxS, k_BxHxSxK)
  dk_BxHxSxK = _transpose_product(q_BxHxTxK, dlogits_BxHxTxS.astype(q_BxHxTxK.dtype)).swapaxes(-1, -2)
  return dq_BxHxTxK.astype(q_BxHxTxK.dtype), dk_BxHxSxK


query_key_logits.defvjp(_query_key_forward, _query_key_backward)


# Large finite negative for masked logits: -inf would give NaN on rows with no visible key.
MASKED_LOGIT = -1e9


def _masked_logits(logits_BxHxTxS: jax.Array, mask_BxHxTxS: jax.Array) -> jax.Array:
  """The logits in float32 plus MASKED_LOGIT where `mask` (broadcast to them) is False. An
  added bias of the mask's shape fuses with what follows (an exp); a select would not."""
  return logits_BxHxTxS.astype(jnp.float32) + jnp.where(mask_BxHxTxS, 0.0, MASKED_LOGIT)


def masked_softmax(logits_BxHxTxS: jax.Array, mask_BxHxTxS: jax.Array) -> jax.Array:
  """Softmax over S in float32 of the masked logits (mask False: MASKED_LOGIT added)."""
  return jax.nn.softmax(_masked_logits(logits_BxHxTxS, mask_BxHxTxS), axis=-1)


def _exp_values(logits_BxHxTxS, v_BxHxSxK, mask_BxHxTxS):
  """(e, e v, rowsum(e)) with e = exp(masked logits - rowmax); the row sums come out of the
  same contraction, as a column of ones appended to v."""
  masked_BxHxTxS = _masked_logits(logits_BxHxTxS, mask_BxHxTxS)
  e_BxHxTxS = jnp.exp(masked_BxHxTxS - jnp.max(masked_BxHxTxS, axis=-1, keepdims=True)).astype(v_BxHxSxK.dtype)
  v_and_ones_BxHxSx1K = jnp.concatenate([v_BxHxSxK, jnp.ones((*v_BxHxSxK.shape[:-1], 1), v_BxHxSxK.dtype)], -1)
  ev_BxHxTx1K = jnp.einsum('bhts,bhsk->bhtk', e_BxHxTxS, v_and_ones_BxHxSx1K)
  return e_BxHxTxS, ev_BxHxTx1K[..., :-1], ev_BxHxTx1K[..., -1:]


@jax.custom_vjp
def softmax_values(logits_BxHxTxS: jax.Array, v_BxHxSxK: jax.Array, mask_BxHxTxS: jax.Array) -> jax.Array:
  """[B, H, T, K] = masked_softmax(logits, mask) v = (e v) / rowsum(e), e = exp(logits -
  rowmax); `mask` broadcasts to the logits."""
  _, ev_BxHxTxK, rowsum_BxHxTx1 = _exp_values(logits_BxHxTxS, v_BxHxSxK, mask_BxHxTxS)
  return ev_BxHxTxK / rowsum_BxHxTx1


def _softmax_values_forward(logits_BxHxTxS, v_BxHxSxK, mask_BxHxTxS):
  e_BxHxTxS, ev_BxHxTxK, rowsum_BxHxTx1 = _exp_values(logits_BxHxTxS, v_BxHxSxK, mask_BxHxTxS)
  out_BxHxTxK = ev_BxHxTxK / rowsum_BxHxTx1
  # A 0-d array carries the logits' dtype (residuals must be arrays).
  return out_BxHxTxK, (e_BxHxTxS, rowsum_BxHxTx1, v_BxHxSxK, out_BxHxTxK, jnp.zeros((), logits_BxHxTxS.dtype))


def _softmax_values_backward(residuals, dout_BxHxTxK):
  # With p = e / l: dv = p^T do = e^T (do / l) and ds = p (dp - rowsum(do o)) = e (dp' -
  # rowsum(do' o)) for do' = do / l, dp' = do' v^T; no pass over [T, S] divides.
  e_BxHxTxS, rowsum_BxHxTx1, v_BxHxSxK, out_BxHxTxK, logits_dtype_like = residuals
  scaled_dout_BxHxTxK = dout_BxHxTxK / rowsum_BxHxTx1
  dv_BxHxSxK = _transpose_product(scaled_dout_BxHxTxK, e_BxHxTxS).swapaxes(-1, -2)
  dp_BxHxTxS = jnp.einsum('bhtk,bhsk->bhts', scaled_dout_BxHxTxK, v_BxHxSxK)
  row_BxHxTx1 = jnp.sum(scaled_dout_BxHxTxK * out_BxHxTxK, axis=-1, keepdims=True)
  dlogits_BxHxTxS = e_BxHxTxS * (dp_BxHxTxS - row_BxHxTx1)
  # e is 0 at masked entries (in any row with a visible key), so is their gradient; the
  # mask itself has none (None).
  return dlogits_BxHxTxS.astype(logits_dtype_like.dtype), dv_BxHxSxK, None


softmax_values.defvjp(_softmax_values_forward, _softmax_values_backward)


def fused_softmax_attention(q_BxHxTxK: jax.Array, k_BxHxSxK: jax.Array, v_BxHxSxK: jax.Array,
                            mask_Bx1x1xS: jax.Array, rows_BxT: jax.Array, causal: bool,
                            distance_bias: DistanceBias | None) -> jax.Array:
  """[B, H, T, K] = softmax(q k^T + a | mask) v for already scaled q in the fused kernel
  (float32, CPU only: check `cpu_kernels.available()`), with a = 0 or `distance_bias`,
  which the kernel computes from its slopes and positions: key j is visible to query t
  where the padding mask allows it and, if `causal`, j <= rows[t]."""
  batch, queries, keys = q_BxHxTxK.shape[0], q_BxHxTxK.shape[2], k_BxHxSxK.shape[2]
  key_bias_BxS = jnp.where(jnp.broadcast_to(mask_Bx1x1xS[:, 0, 0, :], (batch, keys)), 0.0, MASKED_LOGIT)
  if distance_bias is None:
    # Positions are read only for a distance bias.
    slopes, symmetric = None, False
    q_positions_BxT, k_positions_BxS = jnp.zeros((batch, queries), jnp.float32), jnp.zeros((batch, keys), jnp.float32)
  else:
    slopes, symmetric = distance_bias.slopes, distance_bias.symmetric
    q_positions_BxT = distance_bias.q_positions_BxT.astype(jnp.float32)
    k_positions_BxS = distance_bias.k_positions_BxS.astype(jnp.float32)
  return cpu_attention.fused_attention(q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, key_bias_BxS, rows_BxT.astype(jnp.int32),
                                       q_positions_BxT, k_positions_BxS, causal, slopes, symmetric)
