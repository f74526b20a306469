"""The attention seam's contract: every encoding, and subclasses that add a term, give the same
outputs and gradients whether attention runs in the fused CPU kernel or in XLA; a term a
subclass adds always changes the output; the kernel runs exactly where the encoding's
`AttentionTerms` allow it, which is also what evaluation's logit budget is decided from."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research.encodings import ENCODINGS
from pe_research.encodings.alibi import ALiBi
from pe_research.encodings.base import AttentionTerms, relative_offsets
from pe_research.model import Transformer, attend, attention_mask, attention_weights
from pe_research.model.attention import materializes_logits, runs_fused
from pe_research.model.kernels import cpu_kernels
from tests.conftest import require_cpu_kernels, tiny_config


class ALiBiPlusBias(ALiBi):
  """ALiBi plus a bias of the positions: the sum is an array, so attention must form it."""

  def bias(self, q_positions_BxT, k_positions_BxS):
    distance_Bx1xTxS = relative_offsets(q_positions_BxT, k_positions_BxS).astype(jnp.float32)[:, None]
    return super().bias(q_positions_BxT, k_positions_BxS) + jnp.cos(distance_Bx1xTxS)


class ALiBiPlusScore(ALiBi):
  """ALiBi with its logits sharpened by a score function (a temperature)."""

  def attention_terms(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS):
    return super().attention_terms(q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) + AttentionTerms(
        score=lambda logits_BxHxTxS, mask_BxHxTxS: 2.0 * logits_BxHxTxS)


class ALiBiPlusValue(ALiBi):
  """ALiBi plus a value term: each query also reads a code of the key positions it attends."""

  def attention_terms(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS):
    code_BxS = jnp.sin(k_positions_BxS.astype(jnp.float32))

    def value(weights_BxHxTxS):
      return jnp.einsum('bhts,bs->bth', weights_BxHxTxS, code_BxS)[..., None] * jnp.ones(q_BxTxHxK.shape[-1])

    return super().attention_terms(q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS) + AttentionTerms(
        value=value)


SUBCLASSES = {'alibi+bias': ALiBiPlusBias, 'alibi+score': ALiBiPlusScore, 'alibi+value': ALiBiPlusValue}
CASES = sorted(ENCODINGS) + sorted(SUBCLASSES)


def _encoding_class(case):
  return SUBCLASSES.get(case) or ENCODINGS[case]


def _model(case):
  """A 2-layer Transformer (width 16, 2 heads) with the case's encoding, every parameter
  drawn at random (so that zero-initialised tables cannot hide a term)."""
  cls = _encoding_class(case)
  config = tiny_config(encoding__learned__max_length=64)
  model = Transformer(vocab_size=5, output_vocab_size=3, num_layers=2, model_dim=16, num_heads=2, mlp_ratio=2,
                      causal=cls.causal_only, norm='pre', dropout=0.0, rngs=nnx.Rngs(0),
                      encoding=lambda dims, rngs: cls.from_config(config.encoding, dims, rngs))
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(model, jax.tree.unflatten(treedef, [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))
  return model


# Two sequences of 9 tokens, the second padded after 6, at random sorted positions in [0, 40).
TOKENS = jax.random.randint(jax.random.key(2), (2, 9), 0, 5)
POSITIONS = jnp.sort(jax.random.choice(jax.random.key(3), 40, (2, 9), replace=False), axis=1)
VALID = jnp.arange(9)[None] < jnp.array([[9], [6]])
ROWS = jnp.broadcast_to(jnp.arange(9), (2, 9))


def _output_and_gradients(model, kernels_on: bool, monkeypatch):
  """The logits at every row and the gradient of a weighted sum of them, with the CPU
  kernels on or off (chosen when tracing, so the jit is built afresh)."""
  with monkeypatch.context() as patch:
    if not kernels_on:
      patch.setattr(cpu_kernels, 'available', lambda: False)
    graphdef, params = nnx.split(model)
    weights = jax.random.normal(jax.random.key(4), (2, 9, 3))

    def loss(params, *inputs):
      logits = nnx.merge(graphdef, params)(*inputs)
      return jnp.sum(jnp.where(VALID[..., None], logits * weights, 0.0)), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, TOKENS, POSITIONS, VALID, ROWS)
    return np.asarray(logits)[np.asarray(VALID)], jax.tree.leaves(grads)


@pytest.mark.parametrize('case', CASES)
def test_fused_and_xla_attention_give_the_same_outputs_and_gradients(case, monkeypatch):
  model = _model(case)
  fused_logits, fused_grads = _output_and_gradients(model, True, monkeypatch)
  xla_logits, xla_grads = _output_and_gradients(model, False, monkeypatch)
  np.testing.assert_allclose(fused_logits, xla_logits, rtol=1e-4, atol=1e-5)
  assert len(fused_grads) == len(xla_grads)
  for fused, xla in zip(fused_grads, xla_grads):
    np.testing.assert_allclose(fused, xla, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('case', sorted(SUBCLASSES))
@pytest.mark.parametrize('kernels_on', [True, False])
def test_a_term_a_subclass_adds_changes_the_output(case, kernels_on, monkeypatch):
  """The subclass's parameters are its parent's (same seed), so only the added term differs."""
  logits, _ = _output_and_gradients(_model(case), kernels_on, monkeypatch)
  parent_logits, _ = _output_and_gradients(_model('alibi'), kernels_on, monkeypatch)
  assert np.abs(logits - parent_logits).max() > 1e-2


@pytest.mark.parametrize('case', CASES)
def test_the_kernel_runs_exactly_where_the_terms_allow_it(case):
  """On a CPU with the kernels built: the forward calls the fused kernel iff the encoding's
  terms allow it (`runs_fused`), which is iff the model forms no logits
  (`materializes_logits`, which sets evaluation's logit budget)."""
  require_cpu_kernels()
  model = _model(case)
  encoding = model.blocks[0].attention.encoding
  q = jnp.zeros((2, 9, 2, 8))
  fusable = runs_fused(encoding.attention_terms(q, q, POSITIONS, POSITIONS), VALID[:, None, None, :])
  graphdef, params = nnx.split(model)
  forward = lambda p, *inputs: nnx.merge(graphdef, p)(*inputs)  # noqa: E731
  jaxpr = str(jax.make_jaxpr(forward)(params, TOKENS, POSITIONS, VALID, ROWS))
  assert ('PeAttentionForward' in jaxpr) == fusable
  assert materializes_logits(model) == (not fusable)
  if case == 'alibi' or case in SUBCLASSES:  # ALiBi's distance bias runs in the kernel, with a term added not.
    assert fusable == (case == 'alibi')


@pytest.mark.parametrize('terms', [
    AttentionTerms(),
    AttentionTerms(bias=jnp.linspace(-1, 1, 6 * 6).reshape(1, 1, 6, 6)),
    AttentionTerms(score=lambda logits, mask: logits * 0.5,
                   value=lambda weights: jnp.einsum('bhts->bth', weights)[..., None] * jnp.ones(4)),
])
@pytest.mark.parametrize('causal', [False, True])
def test_attention_weights_are_the_ones_attend_applies(terms, causal):
  """What inspection reads through the seam: weights [B, H, T, S] that sum to 1 over the
  visible keys and, applied to v (plus the value term), give `attend`'s output."""
  q, k, v = (jax.random.normal(key, (2, 6, 3, 4)) for key in jax.random.split(jax.random.key(5), 3))
  mask = attention_mask(jnp.arange(6)[None] < jnp.array([[6], [4]]), causal=False)
  weights = attention_weights(q, k, mask, terms, causal=causal)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  assert not np.any(weights[1, :, :, 4:])  # Padding.
  if causal:
    assert not np.any(np.triu(np.asarray(weights)[0], k=1))
  expected = terms.values(weights, v)
  np.testing.assert_allclose(attend(q, k, v, mask, terms, causal=causal), expected, rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize('case', ['none', 'rope', 'alibi', 't5_bias', 'shaw'])
@pytest.mark.parametrize('causal', [False, True])
def test_captured_weights_are_the_softmax_of_the_logits_and_leave_the_output_unchanged(case, causal):
  """The weights a layer sows in its `capture_weights` view equal a softmax written out here
  from its own projections, encoding and mask; its output equals the plain layer's (which
  may run fused)."""
  layer = _model(case).blocks[0].attention
  x = jax.random.normal(jax.random.key(6), (2, 9, 16))
  mask = attention_mask(VALID, causal=False)
  plain = layer(x, POSITIONS, mask, causal=causal)
  out, sown = nnx.capture(nnx.view(layer, capture_weights=True), nnx.Intermediate)(x, POSITIONS, mask, causal=causal)
  (weights,) = sown['attention_weights'].get_value()
  np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-5)

  split = lambda y: y.reshape(2, 9, 2, 8)  # noqa: E731
  q, k = layer.encoding.rotate(split(layer.query(x)), split(layer.key(x)), POSITIONS, POSITIONS)
  bias = layer.encoding.attention_terms(q, k, POSITIONS, POSITIONS).bias
  bias = 0.0 if bias is None else bias.materialize() if hasattr(bias, 'materialize') else bias
  logits = jnp.einsum('bthk,bshk->bhts', q, k) / jnp.sqrt(8.0) + bias
  visible = VALID[:, None, None, :] & (jnp.tril(jnp.ones((9, 9), bool)) if causal else True)
  expected = jax.nn.softmax(jnp.where(visible, logits, -jnp.inf), axis=-1)
  # [B, H, T]: the real queries (padding rows see no real key; their weights are not compared).
  real_rows = np.repeat(np.asarray(VALID)[:, None, :], 2, axis=1)
  np.testing.assert_allclose(np.asarray(weights)[real_rows], np.asarray(expected)[real_rows], rtol=1e-5, atol=1e-6)


def test_a_model_viewed_for_capture_sows_every_layer_and_computes_the_same_logits():
  """The last layer computes only the answer rows, so it sows [B, H, O, T]; the others
  [B, H, T, T]."""
  model = _model('alibi')
  rows = jnp.array([[6, 7, 8], [3, 4, 5]])
  plain = model(TOKENS, POSITIONS, VALID, rows)
  logits, sown = nnx.capture(nnx.view(model, capture_weights=True), nnx.Intermediate)(TOKENS, POSITIONS, VALID, rows)
  np.testing.assert_allclose(logits, plain, rtol=1e-5, atol=1e-5)
  first, last = (sown['blocks'][i]['attention']['attention_weights'].get_value()[0] for i in (0, 1))
  assert first.shape == (2, 2, 9, 9) and last.shape == (2, 2, 3, 9)
  np.testing.assert_allclose(last.sum(-1), 1.0, rtol=1e-5)
