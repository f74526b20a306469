"""Model behaviour: causality, permutation equivariance without positions, readout layout."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research.encodings import make_encoding
from pe_research.model import MultiHeadAttention, Transformer, layout
from pe_research.model.kernels import query_key_logits, softmax_values
from pe_research.tasks import get_task
from tests.conftest import tiny_config

T = 7


def _model(encoding='none', causal=False, norm='pre'):
  config = tiny_config(encoding__name=encoding)
  return Transformer(
      vocab_size=6, output_vocab_size=3, num_layers=2, model_dim=16, num_heads=2, mlp_ratio=2,
      causal=causal, norm=norm, dropout=0.0, encoding=lambda dims, rngs: make_encoding(config.encoding, dims, rngs),
      rngs=nnx.Rngs(0),
  )


def _every_position(model, tokens):
  positions = jnp.broadcast_to(jnp.arange(T), tokens.shape)
  return model(tokens, positions, jnp.ones(tokens.shape, bool), positions)


@pytest.mark.parametrize('encoding', ['none', 'sinusoidal', 'rope', 'alibi', 't5_bias'])
@pytest.mark.parametrize('norm', ['pre', 'post'])
def test_causal_outputs_ignore_later_tokens(encoding, norm):
  model = _model(encoding, causal=True, norm=norm)
  tokens = jax.random.randint(jax.random.key(0), (2, T), 0, 6)
  i = 3
  changed = tokens.at[:, i + 1:].set((tokens[:, i + 1:] + 1) % 6)
  before, after = _every_position(model, tokens), _every_position(model, changed)
  np.testing.assert_allclose(before[:, : i + 1], after[:, : i + 1], atol=1e-5)
  assert not np.allclose(before[:, i + 1:], after[:, i + 1:], atol=1e-3)


def test_causal_gradient_to_later_positions_is_zero():
  model = _model('rope', causal=True)
  x = jax.random.normal(jax.random.key(1), (1, T, 16))
  positions = jnp.arange(T)[None]
  mask = jnp.tril(jnp.ones((T, T), bool))[None, None]
  grad = jax.grad(lambda x: model.blocks[0].attention(x, positions, mask)[0, 2].sum())(x)
  assert np.all(grad[0, 3:] == 0) and np.any(grad[0, :3] != 0)


def test_bidirectional_nope_is_permutation_equivariant():
  model = _model('none', causal=False)
  tokens = jax.random.randint(jax.random.key(2), (2, T), 0, 6)
  permutation = jnp.array([4, 0, 6, 2, 1, 5, 3])
  np.testing.assert_allclose(
      _every_position(model, tokens[:, permutation]), _every_position(model, tokens)[:, permutation], atol=1e-5
  )
  # With positions the model is not equivariant, so the check above can fail.
  model = _model('sinusoidal', causal=False)
  assert not np.allclose(
      _every_position(model, tokens[:, permutation]), _every_position(model, tokens)[:, permutation], atol=1e-3
  )


def test_padding_does_not_change_real_outputs():
  model = _model('t5_bias', causal=False)
  tokens = jax.random.randint(jax.random.key(3), (1, T), 0, 6)
  positions = jnp.arange(T)[None]
  valid = jnp.arange(T)[None] < 4
  index = jnp.arange(4)[None]
  out = model(tokens, positions, valid, index)
  padded = tokens.at[:, 4:].set(5)
  np.testing.assert_allclose(model(padded, positions, valid, index), out, atol=1e-5)
  np.testing.assert_allclose(model(tokens[:, :4], positions[:, :4], valid[:, :4], index), out, atol=1e-5)


@pytest.mark.parametrize('encoding, causal', [('rope', False), ('rope', True), ('shaw', False), ('cope', True)])
@pytest.mark.parametrize('norm', ['pre', 'post'])
def test_logits_at_some_slots_equal_those_of_every_slot(encoding, causal, norm):
  """The last block computes only the answer rows (each example its own): the logits there
  equal the ones read from a pass over every row."""
  model = _model(encoding, causal=causal, norm=norm)
  tokens = jax.random.randint(jax.random.key(3), (2, T), 0, 6)
  positions = jnp.broadcast_to(jnp.arange(T) + 2, tokens.shape)
  index = jnp.array([[6, 1, 3], [2, 5, 0]])
  every = model(tokens, positions, jnp.ones(tokens.shape, bool), jnp.broadcast_to(jnp.arange(T), tokens.shape))
  some = model(tokens, positions, jnp.ones(tokens.shape, bool), index)
  np.testing.assert_allclose(some, jnp.take_along_axis(every, index[:, :, None], axis=1), atol=1e-5)


def test_a_model_needs_a_layer():
  with pytest.raises(ValueError, match='num_layers=0 must be positive'):
    Transformer(vocab_size=6, output_vocab_size=3, num_layers=0, model_dim=16, num_heads=2, mlp_ratio=2,
                causal=False, norm='pre', dropout=0.0, encoding=lambda dims, rngs: None, rngs=nnx.Rngs(0))


def test_heads_must_divide_width():
  with pytest.raises(ValueError, match='num_heads=3.*model_dim=16'):
    MultiHeadAttention(16, 3, rngs=nnx.Rngs(0))


def test_layout_places_answer_slots_after_each_input():
  task = get_task('reverse_string')
  batch = task.sample(jax.random.key(0), 3, jnp.array([1, 3, 4]), 4)
  seq = layout(batch, task.input_vocab_size)
  answer, pad = 2, 3
  for b, n in enumerate([1, 3, 4]):
    expected = list(np.asarray(batch.inputs[b, :n])) + [answer] * n + [pad] * (8 - 2 * n)
    assert list(np.asarray(seq.tokens[b])) == expected
    assert list(np.asarray(seq.valid[b])) == [True] * (2 * n) + [False] * (8 - 2 * n)
    assert list(np.asarray(seq.answer_index[b, :n])) == list(range(n, 2 * n))


def test_attention_kernels_match_plain_autodiff():
  """The hand-written backward passes of q k^T and softmax(logits) v give autodiff's
  gradients of the plain formulas."""
  k_q, k_k, k_v, k_w = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(key, (2, 3, 5, 4)) for key in (k_q, k_k, k_v))
  weights = jax.random.normal(k_w, (2, 3, 5, 4))

  def plain(q, k, v):
    return jnp.einsum('bhts,bhsk->bhtk', jax.nn.softmax(jnp.einsum('bhtk,bhsk->bhts', q, k), -1), v)

  def kernels(q, k, v):
    return softmax_values(query_key_logits(q, k), v, jnp.ones((1, 1, 1, 5), bool))

  loss = lambda f: lambda *a: jnp.sum(f(*a) * weights)  # noqa: E731
  np.testing.assert_allclose(kernels(q, k, v), plain(q, k, v), atol=1e-6)
  # The forward of the gradient (normalized first) gives what evaluation (normalized last) does.
  np.testing.assert_allclose(jax.vjp(kernels, q, k, v)[0], kernels(q, k, v), atol=1e-6)
  for got, want in zip(jax.grad(loss(kernels), (0, 1, 2))(q, k, v), jax.grad(loss(plain), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(jnp.abs(want).max()) > 1e-2
  # Masked keys get no weight and no gradient.
  mask = jnp.arange(5) < 3
  masked = lambda q, k, v: softmax_values(query_key_logits(q, k), v, mask)  # noqa: E731
  np.testing.assert_allclose(masked(q, k, v), plain(q, k[:, :, :3], v[:, :, :3]), atol=1e-6)
  assert not jnp.any(jax.grad(loss(masked), 1)(q, k, v)[:, :, 3:])
