"""LayerNorm: known values, the C++ kernel against the formula in XLA (values and gradients),
and the module against nnx.LayerNorm."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research.model import LayerNorm
from pe_research.model.kernels import cpu_kernels, layer_norm
from pe_research.model.kernels.layer_norm import fused_layer_norm
from tests.conftest import require_cpu_kernels


def _inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape) * 3 + 1
  x[(0,) * (len(shape) - 1)] = 2.5  # A constant row: variance 0, y = bias.
  scale, bias = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
  return tuple(jnp.asarray(a, jnp.float32) for a in (x, scale, bias))


def test_layer_norm_known_values():
  # x = 1, 2, 3, 4: mean 2.5, variance 1.25, so y = (x - 2.5) / sqrt(1.25 + 1e-6) * 2 + 1.
  expected = np.array([-1.683281, 0.105573, 1.894427, 3.683281])
  x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
  np.testing.assert_allclose(layer_norm.layer_norm(x, jnp.full(4, 2.0), jnp.ones(4))[0], expected, rtol=1e-5)
  if jax.default_backend() == 'cpu' and cpu_kernels.available():
    np.testing.assert_allclose(fused_layer_norm(x, jnp.full(4, 2.0), jnp.ones(4), 1e-6)[0], expected, rtol=1e-5)


# Widths: 64 in whole vectors of 4, 8 or 16 lanes; 12 and 40 end in a part vector.
@pytest.mark.parametrize('width', [64, 12, 40])
def test_fused_layer_norm_equals_the_formula_and_its_gradients(width):
  require_cpu_kernels()
  x, scale, bias = _inputs((3, 7, width))
  weights = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), jnp.float32)

  def value_and_grads(norm):
    loss = lambda x, s, b: jnp.sum(weights * norm(x, s, b, 1e-6))  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(x, scale, bias)

  (fused, fused_grads), (xla, xla_grads) = value_and_grads(fused_layer_norm), value_and_grads(layer_norm.in_xla)
  np.testing.assert_allclose(jax.jit(fused_layer_norm, static_argnums=3)(x, scale, bias, 1e-6),
                             layer_norm.in_xla(x, scale, bias, 1e-6), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fused, xla, rtol=1e-5)
  for name, fused_grad, xla_grad in zip('x scale bias'.split(), fused_grads, xla_grads):
    np.testing.assert_allclose(fused_grad, xla_grad, rtol=1e-4, atol=1e-4, err_msg=name)


def test_fused_layer_norm_under_vmap_keeps_each_seeds_parameters():
  require_cpu_kernels()
  x, scale, bias = _inputs((5, 64))
  xs, scales, biases = jnp.stack([x, 2 * x, -x]), jnp.stack([scale, -scale, 3 * scale]), jnp.stack([bias, bias, -bias])
  loss = lambda x, s, b: jnp.sum(jnp.sin(fused_layer_norm(x, s, b, 1e-6)))  # noqa: E731
  stacked, stacked_grads = jax.vmap(jax.value_and_grad(loss, (0, 1, 2)))(xs, scales, biases)
  for i in range(3):
    value, grads = jax.value_and_grad(loss, (0, 1, 2))(xs[i], scales[i], biases[i])
    np.testing.assert_allclose(stacked[i], value, rtol=1e-6)
    for stacked_grad, grad in zip(stacked_grads, grads):
      np.testing.assert_allclose(stacked_grad[i], grad, rtol=1e-5, atol=1e-6)


def test_fused_layer_norm_under_vmap_sums_the_gradients_of_shared_parameters():
  require_cpu_kernels()
  x, scale, bias = _inputs((5, 40))
  xs = jnp.stack([x, 2 * x, -x])

  def grads(norm):
    shared = lambda s, b: jnp.sum(jnp.sin(jax.vmap(lambda x: norm(x, s, b, 1e-6))(xs)))  # noqa: E731
    return jax.grad(shared, (0, 1))(scale, bias)

  for fused, xla in zip(grads(fused_layer_norm), grads(layer_norm.in_xla)):
    np.testing.assert_allclose(fused, xla, rtol=1e-4, atol=1e-4)


def test_layer_norm_module_is_nnx_layer_norm():
  ours, theirs = LayerNorm(40, rngs=nnx.Rngs(3)), nnx.LayerNorm(40, rngs=nnx.Rngs(3))
  assert jax.tree.map(jnp.shape, nnx.state(ours)) == jax.tree.map(jnp.shape, nnx.state(theirs))
  x, scale, bias = _inputs((2, 6, 40))
  for module in (ours, theirs):
    module.scale[...], module.bias[...] = scale, bias

  def value_and_grads(module):
    return nnx.value_and_grad(lambda m, x: jnp.sum(jnp.cos(m(x))), argnums=(0, 1))(module, x)

  (ours_value, (ours_params, ours_dx)), (their_value, (their_params, their_dx)) = (
      value_and_grads(ours), value_and_grads(theirs))
  np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours_value, their_value, rtol=1e-5)
  np.testing.assert_allclose(ours_dx, their_dx, rtol=1e-4, atol=1e-4)
  for name in ('scale', 'bias'):
    np.testing.assert_allclose(ours_params[name][...], their_params[name][...], rtol=1e-4, atol=1e-4, err_msg=name)


def test_layer_norm_module_draws_the_keys_nnx_layer_norm_draws():
  """Models built before the kernel keep their initialization: the modules after a norm get
  the same keys."""
  ours, theirs = nnx.Rngs(5), nnx.Rngs(5)
  LayerNorm(8, rngs=ours)
  nnx.LayerNorm(8, rngs=theirs)
  np.testing.assert_array_equal(jax.random.key_data(ours.params()), jax.random.key_data(theirs.params()))
