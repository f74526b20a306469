"""Masked loss and accuracies over answer tokens (shared by training and evaluation).

`answer_totals` sums over a batch, so that batches cut into parts (training's length
buckets) combine exactly: add the parts' totals, then `rates`.
"""

import jax
import jax.numpy as jnp
import optax


def answer_totals(logits_BxOxV: jax.Array, targets_BxO: jax.Array, mask_BxO: jax.Array) -> dict:
  """Sums over the batch: cross-entropy of the scored answer tokens (`loss`), scored tokens
  (`scored`), scored tokens predicted right (`right`), examples with every scored token
  right (`solved`) and examples (`examples`)."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxOxV.astype(jnp.float32), targets_BxO)
  correct = (jnp.argmax(logits_BxOxV, -1) == targets_BxO) | ~mask_BxO
  return {
      'loss': jnp.sum(losses * mask_BxO),
      'scored': jnp.sum(mask_BxO).astype(jnp.float32),
      'right': jnp.sum(correct & mask_BxO).astype(jnp.float32),
      'solved': jnp.sum(jnp.all(correct, axis=-1)).astype(jnp.float32),
      'examples': jnp.float32(targets_BxO.shape[0]),
  }


def rates(totals: dict) -> dict:
  """Mean cross-entropy per scored token (`loss`), token accuracy and sequence accuracy."""
  scored = jnp.maximum(totals['scored'], 1)
  return {'loss': totals['loss'] / scored, 'token_accuracy': totals['right'] / scored,
          'sequence_accuracy': totals['solved'] / totals['examples']}


def accuracies(logits_BxOxV: jax.Array, targets_BxO: jax.Array, mask_BxO: jax.Array):
  """(token accuracy, sequence accuracy): the fraction of scored tokens predicted right, and
  the fraction of examples whose scored tokens are all right."""
  scores = rates(answer_totals(logits_BxOxV, targets_BxO, mask_BxO))
  return scores['token_accuracy'], scores['sequence_accuracy']


def position_blind_ceiling(targets_BxO: jax.Array, mask_BxO: jax.Array, vocab_size: int) -> jax.Array:
  """The best token accuracy (pooled as `accuracies` pools it) of any model that gives all
  answer slots of an example the same output: per example, the count of its most frequent
  scored answer token; summed, over the scored tokens.

  A bidirectional Transformer without positions is such a model: its answer slots are the
  same token with the same (permutation-invariant) view of the input, so they get the same
  logits, and on reverse_string it can at best answer each example's majority bit. The
  bound is reached where an example's answer tokens are a rearrangement of its input's (copy,
  reverse, sort, duplicate); it is 1 for one-token answers (no ceiling from this argument)."""
  counts_BxV = jnp.sum(jax.nn.one_hot(targets_BxO, vocab_size) * mask_BxO[..., None], axis=1)
  return jnp.sum(jnp.max(counts_BxV, axis=-1)) / jnp.maximum(jnp.sum(mask_BxO), 1)
