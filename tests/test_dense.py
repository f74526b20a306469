"""Dense: nnx.Linear in float32; in bfloat16, products of rounded operands, with
the hand-written backward; the C++ transpose bit for bit as XLA's; and bfloat16 weight
gradients on a CPU."""

import re

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research.model import dense
from pe_research.model.dense import Dense
from pe_research.model.kernels import matmul
from pe_research.model.readout import layout
from pe_research.tasks import get_task
from pe_research.training.train_step import model_from_config
from tests.conftest import require_cpu_kernels, tiny_config


# in < out (in bfloat16, dW from x^T), in > out (from g^T), in == out; with and without bias.
SHAPES = [(8, 24, True), (24, 8, True), (16, 16, False)]


@pytest.mark.parametrize('features_in, features_out, use_bias', SHAPES)
def test_float32_dense_is_nnx_linear(features_in, features_out, use_bias):
  """The same parameters and outputs bit for bit; the same gradients within float32 rounding
  (the hand-written backward sums dW in another order)."""
  ours = Dense(features_in, features_out, use_bias=use_bias, rngs=nnx.Rngs(3))
  theirs = nnx.Linear(features_in, features_out, use_bias=use_bias, rngs=nnx.Rngs(3))
  assert jax.tree.all(jax.tree.map(jnp.array_equal, nnx.state(ours, nnx.Param), nnx.state(theirs, nnx.Param)))
  x = jax.random.normal(jax.random.key(0), (2, 5, features_in))
  weights = jax.random.normal(jax.random.key(1), (2, 5, features_out))
  np.testing.assert_array_equal(ours(x), theirs(x))

  def grads(model):
    return nnx.grad(lambda m, x: jnp.sum(m(x) * weights), argnums=(0, 1))(model, x)

  (ours_params, ours_x), (theirs_params, theirs_x) = grads(ours), grads(theirs)
  np.testing.assert_allclose(ours_x, theirs_x, rtol=1e-6, atol=1e-6)
  for got, want in zip(jax.tree.leaves(ours_params), jax.tree.leaves(theirs_params), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _rounded(a):
  return np.asarray(jnp.asarray(a, jnp.float32).astype(jnp.bfloat16)).astype(np.float64)


@pytest.mark.parametrize('features_in, features_out, use_bias', SHAPES)
def test_bfloat16_dense_multiplies_rounded_operands(features_in, features_out, use_bias):
  """y = bf16(x) bf16(W) + b, dx = bf16(g) bf16(W)^T, dW = bf16(x)^T bf16(g), each summed in
  float32: within float32 rounding of the same products in float64, and so far from the
  unrounded ones."""
  layer = Dense(features_in, features_out, use_bias=use_bias, matmul_dtype='bfloat16', rngs=nnx.Rngs(3))
  x = jax.random.normal(jax.random.key(0), (3, 7, features_in))
  g = jax.random.normal(jax.random.key(1), (3, 7, features_out))
  w = np.asarray(layer.kernel[...], np.float64)
  bias = np.asarray(layer.bias[...], np.float64) if use_bias else 0.0
  y, pullback = jax.vjp(lambda x, w: matmul.matmul(x, w, layer.matmul_dtype), x, layer.kernel[...])
  dx, dw = pullback(g)
  x_rows, g_rows = _rounded(x).reshape(-1, features_in), _rounded(g).reshape(-1, features_out)
  expected = {
      'y': (_rounded(x) @ _rounded(w) + bias, layer(x)),
      'dx': (_rounded(g) @ _rounded(w).T, dx),
      'dW': (x_rows.T @ g_rows, dw),
  }
  unrounded = {'y': np.asarray(x) @ w + bias, 'dx': np.asarray(g) @ w.T,
               'dW': np.asarray(x).reshape(-1, features_in).T @ np.asarray(g).reshape(-1, features_out)}
  for name, (want, got) in expected.items():
    assert got.dtype == jnp.float32, name
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    assert np.max(np.abs(unrounded[name] - want)) > 1e-3, name  # The rounding shows.
  np.testing.assert_allclose(y + bias, layer(x), rtol=1e-6, atol=1e-6)


def test_dense_under_vmap_is_each_member_alone():
  """Seeds vmapped over the parameters (as training does) give each seed's own values and
  gradients, in both dtypes."""
  for matmul_dtype in dense.MATMUL_DTYPES:
    for features_in, features_out, _ in SHAPES:
      x = jax.random.normal(jax.random.key(0), (3, 5, 9, features_in))
      w = jax.random.normal(jax.random.key(1), (3, features_in, features_out))
      loss = lambda x, w: jnp.sum(jnp.sin(matmul.matmul(x, w, jnp.dtype(matmul_dtype))))  # noqa: E731
      together = jax.jit(jax.vmap(jax.grad(loss, (0, 1))))(x, w)
      for seed in range(3):
        alone = jax.jit(jax.grad(loss, (0, 1)))(x[seed], w[seed])
        for got, want in zip(together, alone):
          np.testing.assert_allclose(got[seed], want, rtol=1e-5, atol=1e-5)


def test_unknown_matmul_dtype_is_refused():
  with pytest.raises(ValueError, match=r"matmul_dtype='float16' is unknown; allowed: float32, bfloat16"):
    Dense(4, 4, matmul_dtype='float16', rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"matmul_dtype='half precision' is unknown"):
    Dense(4, 4, matmul_dtype='half precision', rngs=nnx.Rngs(0))


@pytest.mark.parametrize('dtype', ['bfloat16', 'float32'])
@pytest.mark.parametrize('shape', [(37, 24), (2, 3, 16, 64), (1, 5), (80, 17)])
def test_cpu_transpose_is_xla_transpose_and_convert_bit_for_bit(shape, dtype):
  require_cpu_kernels()
  rng = np.random.default_rng(0)
  x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-40, 39, shape)).astype(np.float32)
  flat = x.reshape(-1)
  flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45][:flat.size]
  # Ties: halfway between two bfloat16 values, rounded to the even one.
  flat[6:8] = np.array([0x3F808000, 0x3F818000], np.uint32).view(np.float32)[:max(0, flat.size - 6)]
  got = jax.jit(lambda x: matmul.fused_transpose(x, dtype))(jnp.asarray(x))
  want = jnp.swapaxes(jnp.asarray(x), -1, -2).astype(dtype)
  assert got.shape == want.shape and got.dtype == want.dtype
  bits = np.uint16 if dtype == 'bfloat16' else np.uint32
  np.testing.assert_array_equal(np.asarray(got).view(bits), np.asarray(want).view(bits))


def _dot_operand_types(compiled_text: str) -> list[tuple[str, str, int]]:
  """(lhs dtype, rhs dtype, contraction length) of every dot in compiled HLO (each dot's
  fused computation declares its operands)."""
  found = []
  for body in re.findall(r'\{\n(.*?)\n\}', compiled_text, re.S):
    declared = {name: (dtype, [int(d) for d in dims.split(',') if d])
                for name, dtype, dims in re.findall(r'(%[\w.\-]+) = (\w+)\[([\d,]*)\]', body)}
    for a, b, axis in re.findall(r' dot\((%[\w.\-]+), (%[\w.\-]+)\), lhs_contracting_dims=\{(\d+)\}', body):
      found.append((declared[a][0], declared[b][0], declared[a][1][int(axis)]))
  return found


def _compiled_gradient(matmul_dtype: str) -> str:
  """The compiled HLO of a tiny model's gradient, its layers in `matmul_dtype`."""
  config = tiny_config(model__matmul_dtype=matmul_dtype)
  task = get_task(config.task.name)
  graphdef, params = nnx.split(model_from_config(config, task, nnx.Rngs(0)))
  batch = task.sample(jax.random.key(0), 4, jnp.full(4, 5), 5)
  seq = layout(batch, task.input_vocab_size)
  positions = jnp.broadcast_to(jnp.arange(seq.tokens.shape[1]), seq.tokens.shape)

  def loss(params):
    return jnp.sum(nnx.merge(graphdef, params)(seq.tokens, positions, seq.valid, seq.answer_index) ** 2)

  return jax.jit(jax.grad(loss)).lower(params).compile().as_text()


def test_bfloat16_weight_gradients_are_bfloat16_products_on_cpu():
  """The reason for the transpose kernel: every product of a bfloat16 layer's step, weight
  gradients included, has bfloat16 operands (XLA, given x.T, computes dW in float32)."""
  require_cpu_kernels()
  dots = _dot_operand_types(_compiled_gradient('bfloat16'))
  # q, k, v, o, MLP in and out, and the head, forward and (two each) backward. The head's
  # dx sums over its 2 classes, a product too small for YNNPACK, which XLA does in float32.
  assert len(dots) >= 20, dots
  assert {(a, b) for a, b, length in dots if length >= 8} == {('bf16', 'bf16')}, dots


@pytest.mark.parametrize('matmul_dtype, kernel', [('float32', 'PeTransposeFloat32'),
                                                  ('bfloat16', 'PeTransposeToBfloat16')])
def test_weight_gradients_transpose_in_the_kernel_on_cpu(matmul_dtype, kernel):
  """Weight gradients take their transposed operands from the C++ kernel, not from XLA's
  (slower) transpose folded into the product: at least one per distinct input of the Dense
  layers (XLA merges the transposes of q, k and v's shared input): per block, attention's
  input and output and the MLP's input and hidden layer; and the head's input."""
  require_cpu_kernels()
  inputs = 4 * tiny_config().model.num_layers + 1
  assert _compiled_gradient(matmul_dtype).count(f'custom_call_target="{kernel}"') >= inputs
