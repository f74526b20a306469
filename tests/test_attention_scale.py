"""`model.attention_scale`: the logits are q.k / sqrt(K) + b ('sqrt_dk'), q.k + b ('none') or
s_h log(n) (q.k / sqrt(K) + b) ('log_length', Scalable-Softmax), as `LogitScale` says, in the
fused CPU kernel and in XLA alike; the kernel still runs where it did."""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research import validation
from pe_research.cli import ConfigError
from pe_research.encodings.alibi import ALiBi
from pe_research.encodings.base import AttentionTerms
from pe_research.model import attend, attention_mask
from pe_research.model.attention import LogitScale, attention_logits, runs_fused
from pe_research.model.kernels import cpu_kernels
from pe_research.tasks import get_task
from pe_research.training.train_step import model_from_config
from tests.conftest import tiny_config

B, T, H, K = 2, 7, 3, 8
Q, KEYS, V = (jax.random.normal(key, (B, T, H, K)) for key in jax.random.split(jax.random.key(0), 3))
VALID = jnp.arange(T)[None] < jnp.array([[T], [5]])
PADDING = attention_mask(VALID, causal=False)
POSITIONS = jnp.broadcast_to(jnp.arange(T), (B, T))
S_H = jnp.array([0.3, 0.5, 0.9])
ALIBI = AttentionTerms(bias=ALiBi(num_heads=H, causal=False).bias(POSITIONS, POSITIONS))


def _visible_keys(causal: bool) -> np.ndarray:
  """n [B, T]: the real keys j each query t sees (j <= t too if causal), counted by loops."""
  valid = np.asarray(VALID)
  return np.array([[sum(valid[b, j] and (j <= t or not causal) for j in range(T)) for t in range(T)]
                   for b in range(B)])


def _dot_BxHxTxS() -> np.ndarray:
  return np.einsum('bthk,bshk->bhts', np.asarray(Q, np.float64), np.asarray(KEYS, np.float64))


def _bias(terms) -> np.ndarray:
  return 0.0 if terms.bias is None else np.asarray(terms.bias.materialize())


@pytest.mark.parametrize('terms', [AttentionTerms(), ALIBI], ids=['no bias', 'alibi'])
@pytest.mark.parametrize('causal', [False, True])
def test_each_scale_gives_the_logits_its_formula_says(terms, causal):
  visible = np.asarray(attention_logits(Q, KEYS, PADDING, terms, causal=causal)[1])
  visible = np.broadcast_to(visible, (B, H, T, T))
  z = _dot_BxHxTxS() / math.sqrt(K) + _bias(terms)
  n = _visible_keys(causal)[:, None, :, None]
  expected = {
      'sqrt_dk': z,
      'none': _dot_BxHxTxS() + _bias(terms),  # The bias keeps its scale.
      # The whole logit, bias included, times s_h log n.
      'log_length': np.asarray(S_H)[None, :, None, None] * np.log(np.maximum(n, 1)) * z,
  }
  for kind, want in expected.items():
    logits = attention_logits(Q, KEYS, PADDING, terms, causal=causal, scale=LogitScale(kind, S_H))[0]
    np.testing.assert_allclose(np.asarray(logits)[visible], np.broadcast_to(want, (B, H, T, T))[visible], rtol=2e-5,
                               atol=2e-5, err_msg=kind)


def test_the_visible_keys_count_a_causal_query_s_row_and_a_bidirectional_query_s_real_keys():
  n = _visible_keys(True)
  assert n[0].tolist() == list(range(1, T + 1)) and n[1].tolist() == [1, 2, 3, 4, 5, 5, 5]
  assert _visible_keys(False)[1].tolist() == [5] * T


@pytest.mark.parametrize('kind', ['sqrt_dk', 'none', 'log_length'])
@pytest.mark.parametrize('terms', [AttentionTerms(), ALIBI], ids=['no bias', 'alibi'])
@pytest.mark.parametrize('causal', [False, True])
def test_fused_and_xla_attention_agree_under_every_scale(kind, terms, causal, monkeypatch):
  """Outputs and gradients (s included) agree; the kernel runs where it did, and under
  'log_length' only without a bias, which it could not scale."""
  scale_of = lambda s_H: LogitScale(kind, s_H)  # noqa: E731
  weights = jax.random.normal(jax.random.key(1), (B, T, H, K))

  def loss(q, k, v, s_H):
    out = attend(q, k, v, PADDING, terms, causal=causal, scale=scale_of(s_H))
    return jnp.sum(jnp.where(VALID[:, :, None, None], out * weights, 0.0))

  results = []
  for kernels_on in (True, False):
    with monkeypatch.context() as patch:
      if not kernels_on:
        patch.setattr(cpu_kernels, 'available', lambda: False)
      results.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(Q, KEYS, V, S_H))
  (fused_value, fused_grads), (xla_value, xla_grads) = results
  np.testing.assert_allclose(fused_value, xla_value, rtol=1e-5)
  for fused, xla in zip(fused_grads, xla_grads):
    np.testing.assert_allclose(fused, xla, rtol=1e-4, atol=1e-5)
  if kind == 'log_length':
    assert np.all(np.abs(fused_grads[3]) > 0)
  assert runs_fused(terms, PADDING, scale_of(S_H)) == (kind != 'log_length' or terms.bias is None)


def _model(attention_scale: str):
  config = tiny_config(model__attention_scale=attention_scale, encoding__name='alibi')
  return model_from_config(config, get_task(config.task.name), nnx.Rngs(0)), config


def test_log_length_starts_as_sqrt_dk_at_the_longest_training_sequence():
  """s starts at 1 / log(L), L the longest training sequence (6 input tokens and 6 answer
  slots), so a bidirectional model reading exactly L tokens computes what 'sqrt_dk' does;
  at other lengths it does not."""
  scaled, config = _model('log_length')
  plain, _ = _model('sqrt_dk')
  longest = config.train.max_length + get_task(config.task.name).output_length(config.train.max_length)
  for block in scaled.blocks:
    np.testing.assert_allclose(block.attention.length_scale[...], 1 / math.log(longest), rtol=1e-6)
  assert not any('length_scale' in str(path) for path, _ in nnx.to_flat_state(nnx.state(plain, nnx.Param)))

  def outputs(model, length):
    tokens = jax.random.randint(jax.random.key(2), (2, length), 0, 2)
    positions = jnp.broadcast_to(jnp.arange(length), (2, length))
    return model(tokens, positions, jnp.ones((2, length), bool), positions[:, -3:])

  np.testing.assert_allclose(outputs(scaled, longest), outputs(plain, longest), rtol=1e-4, atol=1e-5)
  assert not np.allclose(outputs(scaled, 2 * longest), outputs(plain, 2 * longest), atol=1e-3)


def test_an_unknown_attention_scale_is_a_config_error():
  with pytest.raises(ConfigError, match=r"config.model.attention_scale='sqrt' is unknown; allowed: log_length, none, "
                                        r'sqrt_dk'):
    validation.validate(tiny_config(model__attention_scale='sqrt'))
