"""Abacus embeddings (McLeish et al. 2024, "Transformers Can Do Arithmetic with the Right
Embeddings", NeurIPS 2024, arXiv 2405.17399).

Position ids for digits that align digits of the same significance across numbers: within
each maximal run of digit tokens the ids are 1, 2, ..., run length; every other token gets
0. At training a random offset k ~ U{0 .. max_k} (max_k = 99 in the paper) is added to the
non-zero ids, so that the table rows used for long numbers at test time are trained too; at
evaluation (`deterministic=True`) k = 0. The ids index a learned table added to the token
embeddings:

    x_t <- x_t + E[abacus_id_t (+ k)].

Abacus is not a positional encoding of its own: it acts *on top of* the encoding named by
`encoding.name` (NoPE or FIRE in the paper), enabled by `encoding.abacus.enabled`, and
needs the task's `digit_tokens`. It reads token ids, not positions, so every position
sampler leaves it unchanged.

Conventions: the answer placeholders (see `pe_research.model.readout`) stand for the
answer's digits, which in the paper's autoregressive setup are digit tokens with ids of
their own, so a run of placeholders is numbered 1, 2, ... too (a run of its own, never
merged with digits before it; the same offset k): answer digit t then shares its id with the
input digits of the same significance. One offset per example (the reference code draws
one per batch; the marginal per example is the same). The table has
`encoding.abacus.max_length` rows, starts at N(0, 0.02^2) like `learned`, and is clamped
when gathering (ids of real tokens are checked against the config, see `check_config`).
Numbers are expected least-significant digit first, as the paper writes them; that is the
task's business.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import EvaluationMode, HasOptions


def run_ids(member_BxT: jax.Array) -> jax.Array:
  """int32[B, T]: 1, 2, ... along each maximal run of True, 0 at False."""
  t = jnp.arange(member_BxT.shape[1], dtype=jnp.int32)
  last_outside = jax.lax.cummax(jnp.where(member_BxT, -1, t), axis=1)
  return jnp.where(member_BxT, t - last_outside, 0).astype(jnp.int32)


def abacus_ids(tokens_BxT: jax.Array, digit_tokens: tuple[int, ...],
               answer_token: int | None = None) -> jax.Array:
  """int32[B, T]: 1, 2, ... along each maximal run of digit tokens and along each run of
  `answer_token` placeholders (if given), 0 elsewhere."""
  ids = run_ids(jnp.isin(tokens_BxT, jnp.asarray(digit_tokens, tokens_BxT.dtype)))
  if answer_token is not None:
    ids = ids + run_ids(tokens_BxT == answer_token)
  return ids


class Abacus(EvaluationMode, HasOptions):
  """Adds a learned embedding of each token's Abacus id (its place within its number).

  Args:
    digit_tokens: the token ids that are digits (`Task.digit_tokens`).
    answer_token: the id of the answer placeholder, numbered like digits; None: not numbered.
    dim: model width D.
    max_k: largest random offset at training.
    max_length: rows of the table.
    deterministic: True at evaluation (offset 0); set by `nnx.view(model, deterministic=True)`.
  """

  section = 'abacus'
  options = {
      # Add Abacus digit-place ids (McLeish et al. 2024) on top of encoding.name; digit tasks
      # only. False: Abacus is an addition to an encoding, made only when asked for.
      'enabled': False,
      # Largest random offset added to the ids at training (paper: 99). 99: McLeish et al. 2024.
      'max_k': 99,
      # Rows of the Abacus table; must be > max_k + the longest sequence. 256: our choice, room
      # for max_k plus the default run's longest sequence (99 + 128 + 1 = 228); `check_config`
      # refuses a table a run outgrows.
      'max_length': 256,
  }

  def __init__(self, digit_tokens, dim: int, rngs: nnx.Rngs, *, answer_token: int | None = None, max_k: int = 99,
               max_length: int = 256, deterministic: bool = False):
    if not digit_tokens:
      raise ValueError('abacus needs digit tokens; the task has none')
    self.digit_tokens = tuple(int(t) for t in digit_tokens)
    self.answer_token = answer_token
    self.max_k = max_k
    self.max_length = max_length
    self.deterministic = deterministic
    self.table = nnx.Embed(max_length, dim, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)

  @classmethod
  def check_config(cls, config, digit_tokens, longest_sequence: int) -> None:
    """Checks `config.abacus` (of an `encoding` section) for a task with `digit_tokens`."""
    a = config.abacus
    if not a.enabled:
      return
    if not digit_tokens:
      raise ValueError(
          'config.encoding.abacus.enabled=True but the task has no digit tokens (Task.digit_tokens is empty); '
          'allowed: a digit task, or enabled=False'
      )
    if not isinstance(a.max_k, int) or a.max_k < 0:
      raise ValueError(f'config.encoding.abacus.max_k={a.max_k!r} must be an integer >= 0 (paper: 99)')
    needed = a.max_k + longest_sequence + 1
    if a.max_length < needed:
      raise ValueError(
          f'config.encoding.abacus.max_length={a.max_length} is too small for ids up to max_k={a.max_k} plus '
          f'the longest sequence ({longest_sequence} tokens); allowed: >= {needed}'
      )

  @classmethod
  def from_config(cls, config, digit_tokens, answer_token: int | None, dim: int, rngs: nnx.Rngs) -> 'Abacus':
    a = config.abacus
    return cls(digit_tokens, dim, rngs, answer_token=answer_token, max_k=a.max_k, max_length=a.max_length)

  def ids(self, tokens_BxT: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """int32[B, T] table rows: the Abacus ids, plus a random offset per example at training."""
    ids_BxT = abacus_ids(tokens_BxT, self.digit_tokens, self.answer_token)
    if self.deterministic:
      return ids_BxT
    if key is None:
      raise ValueError(
          'abacus draws random offsets at training and needs a key; pass one (the model call\'s dropout_key), '
          'or evaluate the nnx.view(model, deterministic=True)'
      )
    offset_Bx1 = jax.random.randint(key, (tokens_BxT.shape[0], 1), 0, self.max_k + 1, dtype=jnp.int32)
    return jnp.where(ids_BxT > 0, ids_BxT + offset_Bx1, 0)

  def __call__(self, x_BxTxD: jax.Array, tokens_BxT: jax.Array, key: jax.Array | None = None) -> jax.Array:
    rows_BxT = jnp.minimum(self.ids(tokens_BxT, key), self.max_length - 1)
    return x_BxTxD + self.table(rows_BxT).astype(x_BxTxD.dtype)
