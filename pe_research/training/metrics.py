"""Masked loss and accuracies over answer tokens (shared by training and evaluation)."""

import jax
import jax.numpy as jnp
import optax


def masked_cross_entropy(logits_BxOxV: jax.Array, targets_BxO: jax.Array, mask_BxO: jax.Array) -> jax.Array:
  """Mean cross-entropy over the scored answer tokens."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxOxV.astype(jnp.float32), targets_BxO)
  return jnp.sum(losses * mask_BxO) / jnp.maximum(jnp.sum(mask_BxO), 1)


def accuracies(logits_BxOxV: jax.Array, targets_BxO: jax.Array, mask_BxO: jax.Array):
  """(token accuracy, sequence accuracy): the fraction of scored tokens predicted right, and
  the fraction of examples whose scored tokens are all right."""
  correct = (jnp.argmax(logits_BxOxV, -1) == targets_BxO) | ~mask_BxO
  token = jnp.sum(correct & mask_BxO) / jnp.maximum(jnp.sum(mask_BxO), 1)
  return token, jnp.mean(jnp.all(correct, axis=-1))
