"""The positional-encoding interface: optional hooks where a position can enter.

An encoding is an `nnx.Module` that overrides any of
  * `embed(x, positions)`: the input stage (added or concatenated codes);
  * `rotate(q, k, q_positions, k_positions)`: the query/key stage (RoPE, xPos);
  * `bias(q_positions, k_positions)`: a logit bias of the positions alone (ALiBi, T5, FIRE);
  * `attention_terms(q, k, q_positions, k_positions)`: everything the encoding adds to
    attention, as an `AttentionTerms` description (by default: its `bias`). Content-dependent
    schemes (Shaw, Transformer-XL, CoPE) override it to add logit terms of q and k, a
    function of the logits, or a term on the values.
Attention (`pe_research.model.attention.attend`) reads only that description, so a subclass
that changes a term always changes what attention computes. A bias linear in the distance
is a `DistanceBias`, a description (slopes and positions) rather than a [B, H, T, S] tensor,
which the fused CPU attention kernel computes itself; adding a tensor to it gives a tensor.
The base class implements every hook as the identity, which is NoPE.

Options: an encoding declares the options it reads and their defaults next to its code
(`section`, `options`); the registry assembles `config.encoding.<section>` from them
(`pe_research.encodings.default_config`), and `from_config` / `check_config` read
`config.<section>` of the `encoding` config section they are given.

Shapes: B batch, T query positions, S key positions, H heads, K head width, D model width.
Positions are int or float arrays [B, T] made by a sampler (`pe_research.positions`).
Logits reach the terms already scaled by 1/sqrt(K); biases are added after that scaling.

Evaluation mode: the evaluation graph is built with `nnx.view(model, deterministic=True)`,
the NNX idiom that also turns off `nnx.Dropout`; an encoding whose behaviour differs at
evaluation (RoPE's context extension, Abacus offsets) reads `self.deterministic`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.positions import samples_floats


@dataclasses.dataclass(frozen=True)
class Dims:
  """The sizes an encoding may need to build itself."""

  model_dim: int
  num_heads: int
  causal: bool

  # Positions the model is trained on: the longest training sequence (input plus answer
  # slots), or positions.max_length with a random sampler; 0 when unknown. Encodings that
  # extend their context at evaluation (RoPE with YaRN) take it as the original length.
  train_length: int = 0

  @property
  def head_dim(self) -> int:
    return self.model_dim // self.num_heads


class EvaluationMode(nnx.Module):
  """A module whose behaviour differs between training and evaluation.

  `deterministic` is False while training and True in the evaluation graph, which is built
  with `nnx.view(model, deterministic=True)` (the same switch that turns off nnx.Dropout).
  """

  deterministic: bool = False

  def set_view(self, deterministic: bool | None = None) -> None:
    """Called by `nnx.view`; `deterministic=True` selects the evaluation behaviour."""
    if deterministic is not None:
      self.deterministic = deterministic


class HasOptions:
  """A component whose config options are declared next to its code.

  `section` names its config section (`config.encoding.<section>`) and `options` maps each
  option to its default, a comment above each saying what it is and why it has that value.
  A subclass inherits its parent's section and may declare one of its own as well (it then
  reads both); `option_sections` lists them.
  """

  section: ClassVar[str | None] = None
  options: ClassVar[dict[str, Any]] = {}

  @classmethod
  def option_sections(cls) -> dict[str, dict[str, Any]]:
    """{section: options} of this class and its ancestors, the ancestors' first."""
    sections = {}
    for klass in reversed(cls.__mro__):
      declared = vars(klass)
      if declared.get('options'):
        if not declared.get('section'):
          raise TypeError(f'{klass.__name__} declares options but no section for them')
        sections[declared['section']] = declared['options']
    return sections


class Encoding(EvaluationMode, HasOptions):
  """Base class and NoPE: every hook leaves its input unchanged.

  Subclasses set `acts_on_input` / `acts_on_attention` so that the Transformer builds one
  instance for the input stage and one per attention layer only where it is used, and
  `causal_only` when the scheme is undefined for bidirectional attention.
  """

  acts_on_input: ClassVar[bool] = False
  acts_on_attention: ClassVar[bool] = False
  causal_only: ClassVar[bool] = False
  # False for schemes that index a table by position and so cannot take the float
  # positions of the 'random_continuous' sampler.
  float_positions: ClassVar[bool] = True
  # Options (dotted under config.encoding) read only at evaluation, which
  # `pe_research.evaluate` may change on a trained run.
  evaluation_options: ClassVar[tuple[str, ...]] = ()

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs) -> 'Encoding':
    """Builds the encoding from the `encoding` config section; override to read its options
    (`config.<section>`)."""
    del config, dims, rngs
    return cls()

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    """Raises ValueError, naming the config field, for options this encoding cannot use.

    `longest_sequence` is the most real tokens (input plus answer slots) of any sequence
    the run will train or evaluate on."""
    if cls.causal_only and not dims.causal:
      raise ValueError(
          f'config.encoding.name={config.name!r} is defined for causal attention only; '
          'set config.model.causal=True'
      )
    positions = config.get('positions')
    if not cls.float_positions and positions is not None and samples_floats(positions):
      raise ValueError(
          f'config.encoding.positions.sampler={positions.sampler!r} makes float positions, which '
          f'encoding {config.name!r} cannot take (it indexes a table by integer position); '
          "allowed: 'contiguous', 'randomized'"
      )

  def embed(self, x_BxTxD: jax.Array, positions_BxT: jax.Array) -> jax.Array:
    return x_BxTxD

  def rotate(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS):
    return q_BxTxHxK, k_BxSxHxK

  def bias(self, q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> 'Bias':
    """An additive logit bias of the positions: None, a `DistanceBias`, or an array
    broadcastable to [B, H, T, S]."""
    return None

  def attention_terms(self, q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, q_positions_BxT: jax.Array,
                      k_positions_BxS: jax.Array) -> 'AttentionTerms':
    """What the encoding adds to attention between these queries and keys (already
    rotated, unscaled): by default its `bias`. Override to add content-dependent terms,
    e.g. `super().attention_terms(...) + AttentionTerms(value=...)`."""
    return AttentionTerms(bias=self.bias(q_positions_BxT, k_positions_BxS))


class NoPE(Encoding):
  """No positional encoding (Kazemnejad et al. 2023, "The Impact of Positional Encoding on
  Length Generalization in Transformers"). Order can still be inferred through the causal
  mask; a bidirectional model without positions is permutation-equivariant."""


# What builds an encoding for a model: (dims, rngs) -> Encoding (`Transformer(encoding=...)`).
EncodingFactory = Callable[[Dims, nnx.Rngs], Encoding]


def relative_offsets(q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> jax.Array:
  """[B, T, S] offsets i - j (query minus key), the argument of relative schemes."""
  return q_positions_BxT[:, :, None] - k_positions_BxS[:, None, :]


@dataclasses.dataclass(frozen=True, eq=False)
class DistanceBias:
  """A logit bias linear in the distance of positions, ALiBi's two forms (Press et al. 2022),
  described by its slopes and positions rather than computed:

      bias_h[i, j] = -slope_h * (i - j)       (symmetric=False; causal, j <= i)
      bias_h[i, j] = -slope_h * |i - j|       (symmetric=True)

  for query positions i ([B, T]) and key positions j ([B, S]). The fused CPU attention
  kernel computes it from this description; anywhere else `materialize()` gives the
  [B, H, T, S] array. Adding an array (another term) gives an array: `bias + extra` and
  `extra + bias` are `materialize()` plus `extra`.
  """

  slopes: tuple[float, ...]
  symmetric: bool
  q_positions_BxT: jax.Array
  k_positions_BxS: jax.Array

  # numpy arrays defer `array + bias` to __radd__ instead of making an object array.
  __array_ufunc__ = None

  def materialize(self) -> jax.Array:
    """The bias [B, H, T, S] in float32."""
    distance_BxTxS = relative_offsets(self.q_positions_BxT, self.k_positions_BxS).astype(jnp.float32)
    if self.symmetric:
      distance_BxTxS = jnp.abs(distance_BxTxS)
    return -jnp.asarray(self.slopes, jnp.float32)[None, :, None, None] * distance_BxTxS[:, None]

  def __add__(self, other) -> jax.Array:
    return self.materialize() + other

  def __radd__(self, other) -> jax.Array:
    return other + self.materialize()


# What `Encoding.bias` returns and `AttentionTerms.bias` holds.
Bias = DistanceBias | jax.Array | None


def _plus(a, b):
  """a + b, where None is zero."""
  return b if a is None else a if b is None else a + b


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionTerms:
  """What an encoding adds to attention, for one set of queries and keys:

      logits  = q k^T / sqrt(K) + bias
      logits  = score(logits, mask)                      (if score)
      weights = softmax(logits | mask)
      out     = weights v + value(weights)               (if value)

  bias: None, a `DistanceBias`, or an array broadcastable to [B, H, T, S] (may depend on q
    and k: Shaw's and Transformer-XL's key terms);
  score: None or a function (logits [B, H, T, S], mask [B, H, T, S] bool) -> logits, for
    terms that read the logits themselves (CoPE's gates);
  value: None or a function weights [B, H, T, S] -> [B, T, H, K] added to the output
    (Shaw's value vectors).
  Attention runs in the fused CPU kernel exactly when score and value are None and bias is
  None or a DistanceBias. `terms + other` adds the biases and the value terms and applies
  `other.score` after `terms.score`.
  """

  bias: Bias = None
  score: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  value: Callable[[jax.Array], jax.Array] | None = None

  def __add__(self, other: 'AttentionTerms') -> 'AttentionTerms':
    score = self.score
    if score is None or other.score is None:
      score = score or other.score
    else:
      score = lambda logits, mask: other.score(self.score(logits, mask), mask)  # noqa: E731
    value = self.value
    if value is None or other.value is None:
      value = value or other.value
    else:
      value = lambda weights: self.value(weights) + other.value(weights)  # noqa: E731
    return AttentionTerms(bias=_plus(self.bias, other.bias), score=score, value=value)

  def scores(self, logits_BxHxTxS: jax.Array, mask_BxHxTxS: jax.Array) -> jax.Array:
    """Scaled logits q k^T / sqrt(K) -> the logits with these terms (before masking)."""
    if self.bias is not None:
      logits_BxHxTxS = logits_BxHxTxS + self.bias
    return logits_BxHxTxS if self.score is None else self.score(logits_BxHxTxS, mask_BxHxTxS)

  def values(self, weights_BxHxTxS: jax.Array, v_BxSxHxK: jax.Array) -> jax.Array:
    """Attention weights -> the output [B, T, H, K]: sum_j w_ij v_j, plus the value term."""
    # Heads-major operands: XLA:CPU contracts [B, H, S, K] far faster than [B, S, H, K].
    out_BxTxHxK = jnp.einsum('bhts,bhsk->bhtk', weights_BxHxTxS, v_BxSxHxK.swapaxes(1, 2)).swapaxes(1, 2)
    return out_BxTxHxK if self.value is None else out_BxTxHxK + self.value(weights_BxHxTxS)


def require_even_model_dim(config, dims: Dims) -> None:
  """Config error unless the model width is even (for sin/cos pairs)."""
  if dims.model_dim % 2:
    raise ValueError(f'config.model.model_dim={dims.model_dim} is odd; encoding {config.name!r} needs an even width')


def require_even_head_dim(config, dims: Dims) -> None:
  """Config error unless the head width is even (for rotated channel pairs)."""
  if dims.head_dim % 2:
    raise ValueError(
        f'head width config.model.model_dim / config.model.num_heads = {dims.head_dim} is odd; '
        f'encoding {config.name!r} rotates channel pairs and needs an even head width'
    )
