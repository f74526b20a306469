"""The two contractions of attention, with a backward pass laid out for small heads.

    logits = q k^T                      (query_key_logits)
    out    = softmax(logits | mask) v   (softmax_values; masked logits count as -inf)

Both work on the heads-major layout [B, H, T, K]. Their gradients are written by hand: with
the head widths of this field (K = 8 .. 32), XLA:CPU computes a contraction over the
query axis of a [B, H, T, S] tensor (k's gradient ds^T q, v's gradient p^T do) about 2x
slower than the same product formed as (q^T ds)^T, which transposes only the small
[B, H, T, K] operand; `optimization_barrier` keeps the compiler from folding the transposes
back. softmax_values applies the mask itself and normalizes last, as FlashAttention does
(Dao et al. 2022): out = (e v) / l with e = exp(logits - rowmax) and the row sums l taken
by the same contraction (a column of ones appended to v), so no pass over the [T, S]
logits divides. It keeps e for its backward (ds = p (dp - rowsum(do o)) with p = e / l,
formed from do / l), which is already 0 at masked entries: no pass through exp, the
normalization or the mask select. On a 5-layer, width-64, 8-head model at batch 128 x 80
tokens the layout and backward made a training step about 1.4x faster on a 2-core CPU, and
the late normalization the forward at T=640 about 1.2x (scripts/benchmark.py).
Values equal plain autodiff to float rounding (tests/test_model.py).
"""

import jax
import jax.numpy as jnp

from pe_research.encodings.base import DistanceBias
from pe_research.model import cpu_attention, cpu_kernels


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


def causal_mask(mask_BxHxTxS: jax.Array, rows_BxT: jax.Array, num_keys: int) -> jax.Array:
  """`mask` with key j also hidden from each query t where j > rows[t]."""
  return mask_BxHxTxS & (rows_BxT[:, None, :, None] >= jnp.arange(num_keys))


def softmax_attention(q_BxHxTxK: jax.Array, k_BxHxSxK: jax.Array, v_BxHxSxK: jax.Array, mask_Bx1x1xS: jax.Array,
                      rows_BxT: jax.Array, q_positions_BxT: jax.Array, k_positions_BxS: jax.Array, causal: bool,
                      distance_bias: DistanceBias | None = None) -> jax.Array:
  """[B, H, T, K] = softmax(q k^T + a | mask) v for already scaled q, with a = 0 or
  `distance_bias` of the positions (ALiBi): key j is visible to query t where the padding
  mask allows it and, if `causal`, j <= rows[t]. On a CPU this runs the fused kernel of
  `cpu_attention` where it is built (float32), which computes a itself; elsewhere
  query_key_logits and softmax_values. Both agree to float rounding."""
  def in_xla(q, k, v, mask, rows, q_positions, k_positions):
    logits = query_key_logits(q, k)
    if distance_bias is not None:
      logits = logits + distance_bias.logits(q_positions, k_positions)
    return softmax_values(logits, v, causal_mask(mask, rows, k.shape[2]) if causal else mask)

  def fused(q, k, v, mask, rows, q_positions, k_positions):
    key_bias_BxS = jnp.where(jnp.broadcast_to(mask[:, 0, 0, :], (q.shape[0], k.shape[2])), 0.0, MASKED_LOGIT)
    return cpu_attention.fused_attention(q, k, v, key_bias_BxS, rows.astype(jnp.int32), q_positions.astype(jnp.float32),
                                         k_positions.astype(jnp.float32), causal, distance_bias)

  return cpu_kernels.fused_where_possible(
      fused, in_xla, q_BxHxTxK, k_BxHxSxK, v_BxHxSxK, mask_Bx1x1xS, rows_BxT, q_positions_BxT, k_positions_BxS)
