"""The positional-encoding interface: three optional hooks where a position can enter.

An encoding is an `nnx.Module` that overrides any of
  * `embed(x, positions)`: the input stage (added or concatenated codes);
  * `rotate(q, k, q_positions, k_positions)`: the query/key stage (RoPE, xPos);
  * `bias(q_positions, k_positions)`: a content-independent logit bias (ALiBi, T5), or,
    for content-dependent schemes, `scores(...)` and `values(...)` (Shaw, CoPE).
A bias linear in the distance (ALiBi's) also says so through `distance_bias()`, so that the
fused CPU attention kernel computes it from the positions instead of reading a [T, S] one.
The base class implements every hook as the identity, which is NoPE.

Shapes: B batch, T query positions, S key positions, H heads, K head width, D model width.
Positions are int or float arrays [B, T] made by a sampler (`pe_research.positions`).
Logits reach `scores` already scaled by 1/sqrt(K); biases are added after that scaling.

Evaluation mode: the evaluation graph is built with `nnx.view(model, deterministic=True)`,
the NNX idiom that also turns off `nnx.Dropout`; an encoding whose behaviour differs at
evaluation (RoPE's context extension, Abacus offsets) reads `self.deterministic`.
"""

import dataclasses
from typing import ClassVar, NamedTuple

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


class Encoding(EvaluationMode):
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
    """Builds the encoding from the `encoding` config section; override to read options."""
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

  def bias(self, q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> jax.Array | None:
    """An additive logit bias broadcastable to [B, H, T, S], or None."""
    return None

  def distance_bias(self) -> 'DistanceBias | None':
    """`bias` as a DistanceBias where it is one (its `logits` then equal `bias`): attention
    computes it inside the fused CPU kernel, from the positions, instead of as a [T, S]
    tensor. None where the bias has no such form."""
    return None

  def scores(self, logits_BxHxTxS, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS, mask_BxHxTxS):
    """Scaled logits -> logits with the positional term (default: + `bias`)."""
    bias = self.bias(q_positions_BxT, k_positions_BxS)
    return logits_BxHxTxS if bias is None else logits_BxHxTxS + bias

  def values(self, weights_BxHxTxS, v_BxSxHxK, q_positions_BxT, k_positions_BxS):
    """Attention output sum_j w_ij v_j; relative schemes may add a positional term."""
    # Heads-major operands: XLA:CPU contracts [B, H, S, K] far faster than [B, S, H, K].
    out_BxHxTxK = jnp.einsum('bhts,bhsk->bhtk', weights_BxHxTxS, v_BxSxHxK.swapaxes(1, 2))
    return out_BxHxTxK.swapaxes(1, 2)


class NoPE(Encoding):
  """No positional encoding (Kazemnejad et al. 2023, "The Impact of Positional Encoding on
  Length Generalization in Transformers"). Order can still be inferred through the causal
  mask; a bidirectional model without positions is permutation-equivariant."""


def relative_offsets(q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> jax.Array:
  """[B, T, S] offsets i - j (query minus key), the argument of relative schemes."""
  return q_positions_BxT[:, :, None] - k_positions_BxS[:, None, :]


class DistanceBias(NamedTuple):
  """A logit bias linear in the distance of positions, ALiBi's two forms (Press et al. 2022):

      bias_h[i, j] = -slope_h * (i - j)       (symmetric=False; causal, j <= i)
      bias_h[i, j] = -slope_h * |i - j|       (symmetric=True)
  """

  slopes: tuple[float, ...]
  symmetric: bool

  def logits(self, q_positions_BxT: jax.Array, k_positions_BxS: jax.Array) -> jax.Array:
    """The bias [B, H, T, S] in float32."""
    distance_BxTxS = relative_offsets(q_positions_BxT, k_positions_BxS).astype(jnp.float32)
    if self.symmetric:
      distance_BxTxS = jnp.abs(distance_BxTxS)
    return -jnp.asarray(self.slopes, jnp.float32)[None, :, None, None] * distance_BxTxS[:, None]


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
