"""The fused CPU attention kernel against the XLA path it replaces (values and gradients)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research.encodings.base import DistanceBias
from pe_research.model.kernels import fused_softmax_attention, query_key_logits, softmax_values
from pe_research.model.kernels.layer_norm import layer_norm
from tests.conftest import require_cpu_kernels

pytestmark = pytest.mark.skipif(jax.default_backend() != 'cpu', reason='a CPU kernel')


def _inputs(batch, heads, queries, keys, width, seed=0):
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.standard_normal((batch, heads, n, width)), jnp.float32) for n in (queries, keys, keys))
  valid_BxS = rng.random((batch, keys)) < 0.7
  valid_BxS[0] = False  # A sequence with no visible key: the softmax spreads evenly.
  valid_BxS[1, :2] = True
  valid_BxS[-1] = np.arange(keys) < 2 * keys // 3  # Trailing padding, which the kernel skips.
  valid_BxS[-1, :batch - 1] = False  # Causal rows before the first visible key see none.
  rows_BxT = np.sort(rng.integers(0, keys, (batch, queries)), axis=1).astype(np.int32)
  return q, k, v, jnp.asarray(valid_BxS), jnp.asarray(rows_BxT)


# ALiBi's two forms over 3 heads (the kernel reads one slope per head): (slopes, symmetric).
ALIBI = {
    None: None,
    'linear': ((0.5, 0.25, 0.0625), False),
    'symmetric': ((0.5, 0.25, 0.0625), True),
}


def _distance_bias(alibi, q_positions, k_positions):
  return None if ALIBI[alibi] is None else DistanceBias(*ALIBI[alibi], q_positions, k_positions)


def _positions(batch, queries, keys, seed=2):
  """Sorted float positions, as the random samplers draw them, queries and keys apart."""
  rng = np.random.default_rng(seed)
  return (jnp.asarray(np.sort(rng.uniform(0, 3 * n, (batch, n)), axis=1), jnp.float32) for n in (queries, keys))


def _in_xla(q, k, v, valid_BxS, rows_BxT, causal, distance_bias=None):
  mask = valid_BxS[:, None, None, :]
  if causal:
    mask = mask & (rows_BxT[:, None, :, None] >= jnp.arange(k.shape[2]))
  logits = query_key_logits(q, k)
  if distance_bias is not None:
    logits = logits + distance_bias.materialize()
  return softmax_values(logits, v, mask)


def _fused(q, k, v, valid_BxS, rows_BxT, causal, distance_bias=None):
  return fused_softmax_attention(q, k, v, valid_BxS[:, None, None, :], rows_BxT, causal, distance_bias)


@pytest.mark.parametrize('alibi', list(ALIBI))
@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('width', [8, 16, 12])  # 12: the loop for widths without their own.
@pytest.mark.parametrize('queries,keys', [(37, 37), (5, 150)])
def test_fused_attention_equals_xla_attention_and_its_gradients(causal, width, queries, keys, alibi):
  require_cpu_kernels()
  q, k, v, valid, rows = _inputs(4, 3, queries, keys, width)
  q_positions, k_positions = _positions(4, queries, keys)
  extra = (_distance_bias(alibi, q_positions, k_positions),)
  weights = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)

  def loss(attend):
    return jax.jit(jax.value_and_grad(
        lambda q, k, v: jnp.sum(weights * attend(q, k, v, valid, rows, causal, *extra)), (0, 1, 2)))

  (fused_loss, fused_grads), (xla_loss, xla_grads) = loss(_fused)(q, k, v), loss(_in_xla)(q, k, v)
  np.testing.assert_allclose(jax.jit(lambda q, k, v: _fused(q, k, v, valid, rows, causal, *extra))(q, k, v),
                             _in_xla(q, k, v, valid, rows, causal, *extra), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fused_loss, xla_loss, rtol=1e-5)
  for fused_grad, xla_grad in zip(fused_grads, xla_grads):
    np.testing.assert_allclose(fused_grad, xla_grad, rtol=1e-4, atol=1e-5)


def test_fused_attention_under_vmap_equals_each_slice():
  require_cpu_kernels()
  q, k, v, valid, rows = _inputs(2, 3, 9, 30, 8)
  q_positions, k_positions = _positions(2, 9, 30)
  qs = jnp.stack([q, 2 * q, -q])
  distance_bias = _distance_bias('linear', q_positions, k_positions)
  attend = lambda q: _fused(q, k, v, valid, rows, True, distance_bias)  # noqa: E731
  stacked = jax.vmap(attend)(qs)
  for i in range(3):
    np.testing.assert_array_equal(stacked[i], attend(qs[i]))


def test_fused_attention_checks_one_slope_per_head():
  require_cpu_kernels()
  q, k, v, valid, rows = _inputs(2, 3, 4, 4, 8)
  with pytest.raises(ValueError, match='2 slopes for 3 heads'):
    _fused(q, k, v, valid, rows, False, DistanceBias((0.5, 0.25), False, *_positions(2, 4, 4)))


def test_turning_the_kernels_off_leaves_their_operations_to_xla():
  code = 'from pe_research.model import kernels; print(kernels.available())'
  env = {**os.environ, 'PE_RESEARCH_CPU_KERNELS': '0'}
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'False'


def test_kernels_are_chosen_when_tracing_where_jax_has_only_a_cpu():
  """No platform switch for autodiff to trace through: the gradient's jaxpr calls the
  kernels themselves."""
  require_cpu_kernels()
  x_NxD, scale_D, bias_D = jnp.ones((4, 8)), jnp.ones(8), jnp.zeros(8)
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: layer_norm(x, scale_D, bias_D).sum()))(x_NxD))
  assert 'PeLayerNormForward' in jaxpr and 'PeLayerNormBackward' in jaxpr
  assert 'platform_index' not in jaxpr
