"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer", arXiv 2104.09864), with
partial rotation and context extension at evaluation time.

Each channel pair of q and k is rotated by the angle p * theta_k, theta_k = base^(-2k/d),
k = 0 .. d/2 - 1, so that <R(i) q, R(j) k> depends on i - j only.

Convention: half-split pairs (x_k, x_{k + d/2}) as in GPT-NeoX, LLaMA and Flax gemma;
the interleaved RoFormer pairing is the same up to a fixed permutation of channels.

Options (config `encoding.rope`):
  * `fraction` (partial rotary, GPT-NeoX `rotary_pct`): only the first
    d = 2 * floor(fraction * K / 2) channels of each head rotate, with frequencies computed
    for width d; the other K - d channels carry no position.
  * `base` b of the frequencies.
  * `scaling`, applied only at evaluation (`deterministic=True`, see `EvaluationMode`) to
    run a model trained on L positions on s times more, s = `scale`:
      - 'pi', position interpolation (Chen et al. 2023, arXiv 2306.15595):
        theta'_k = theta_k / s, i.e. RoPE on positions p / s;
      - 'ntk', NTK-aware base scaling (bloc97 2023; Peng et al. 2023, arXiv 2309.00071):
        b' = b * s^(d / (d - 2));
      - 'yarn', NTK-by-parts with attention temperature (Peng et al. 2023): with the
        wavelength lambda_k = 2 pi / theta_k and the ratio r_k = L / lambda_k,
        theta'_k = (1 - gamma(r_k)) theta_k / s + gamma(r_k) theta_k,
        gamma(r) = clip((r - alpha) / (beta - alpha), 0, 1), alpha = 1, beta = 32; and
        q, k are both multiplied by 0.1 ln s + 1 (logits by its square, sqrt(1/t) of the
        paper). Ramp convention: linear in the ratio r_k, as the paper's text defines it
        (the reference code ramps linearly in the channel index between the indices where
        r = beta and r = alpha; the two agree at both ends). The temperature multiplies all
        K channels of q and k (the paper's softmax(q k / (t sqrt(K)))); with full rotation
        that equals the reference code, which scales cos and sin.
    L = `original_length`, or when it is 0 the positions seen in training
    (`Dims.train_length`: the longest training sequence, or positions.max_length with a
    random sampler). At training the plain RoPE is used.
`scaled_rope_frequencies` gives the scaled frequencies for reuse outside the module.
"""

import math
from typing import ClassVar

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, require_even_head_dim

SCALINGS = ('none', 'pi', 'ntk', 'yarn')


def rope_frequencies(dim: int, base: float = 10000.0) -> jax.Array:
  """theta_k = base^(-2k/dim), k = 0 .. dim/2 - 1."""
  return base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)


def yarn_ramp(ratio: jax.Array, alpha: float = 1.0, beta: float = 32.0) -> jax.Array:
  """gamma(r): 0 below alpha (interpolate), 1 above beta (keep), linear in between."""
  return jnp.clip((ratio - alpha) / (beta - alpha), 0.0, 1.0)


def yarn_attention_factor(scale: float) -> float:
  """The factor 0.1 ln s + 1 that YaRN applies to both q and k (s >= 1)."""
  return 0.1 * math.log(scale) + 1.0 if scale > 1 else 1.0


def scaled_rope_frequencies(
    dim: int,
    base: float = 10000.0,
    scaling: str = 'none',
    scale: float = 1.0,
    original_length: int = 0,
    yarn_alpha: float = 1.0,
    yarn_beta: float = 32.0,
) -> tuple[jax.Array, float]:
  """(frequencies theta'_k [dim/2], factor on q and k) of RoPE extended by `scaling`
  ('none', 'pi', 'ntk' or 'yarn', see the module docstring) at scale s = `scale`."""
  if scaling == 'none':
    return rope_frequencies(dim, base), 1.0
  if scaling == 'pi':
    return rope_frequencies(dim, base) / scale, 1.0
  if scaling == 'ntk':
    if dim <= 2:
      raise ValueError(f'NTK-aware scaling needs a rotary width above 2, got {dim}')
    return rope_frequencies(dim, base * scale ** (dim / (dim - 2))), 1.0
  if scaling == 'yarn':
    if original_length <= 0:
      raise ValueError(f'YaRN needs the original context length L > 0, got {original_length}')
    theta = rope_frequencies(dim, base)
    gamma = yarn_ramp(original_length * theta / (2 * math.pi), yarn_alpha, yarn_beta)
    return (1 - gamma) * theta / scale + gamma * theta, yarn_attention_factor(scale)
  raise ValueError(f'unknown RoPE scaling {scaling!r}; allowed: {", ".join(SCALINGS)}')


def apply_rotary(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, frequencies: jax.Array) -> jax.Array:
  """Rotates the pairs (x_k, x_{k+K/2}) of x by positions * frequencies[k]."""
  angles = jnp.asarray(positions_BxT, jnp.float32)[:, :, None, None] * frequencies
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = jnp.split(x_BxTxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxHxK.dtype)


def rotary_width(head_dim: int, fraction: float) -> int:
  """Rotated channels per head: the largest even number <= fraction * head_dim."""
  return 2 * int(fraction * head_dim / 2)


class RoPE(Encoding):
  """Rotates queries and keys by their positions; no input code, no bias.

  Args:
    head_dim: K, the width of one head (even).
    base: b of the frequencies.
    fraction: share of each head's channels that rotate (partial rotary).
    scaling, scale, original_length, yarn_alpha, yarn_beta: context extension at
      evaluation, see the module docstring.
    deterministic: True at evaluation (set by `nnx.view(model, deterministic=True)`);
      the context extension applies only then.
  """

  acts_on_attention: ClassVar[bool] = True
  section = 'rope'
  options = {
      # Base of the rotary frequencies. 10000: Su et al. 2021, theta_k = 10000^(-2k/d).
      'base': 10000.0,
      # Share of each head's channels that rotate (partial rotary; 1: all). 1: RoFormer rotates
      # every channel (GPT-NeoX's rotary_pct is the partial variant).
      'fraction': 1.0,
      # Context extension applied at evaluation only: 'none', 'pi', 'ntk' or 'yarn'. 'none':
      # the RoPE the model was trained with.
      'scaling': 'none',
      # Extension factor s (evaluated context / trained context) for pi, ntk and yarn. 4: our
      # choice, the smallest extension Chen et al. 2023 report (LLaMA, 2048 -> 8192 positions);
      # read only with a scaling.
      'scale': 4.0,
      # YaRN's original context L in positions; 0: the positions seen in training (the longest
      # training sequence, or positions.max_length with a random sampler).
      'original_length': 0,
      # YaRN ramp start: frequencies whose ratio L / wavelength is below alpha are interpolated.
      # 1: Peng et al. 2023's alpha for LLaMA.
      'yarn_alpha': 1.0,
      # YaRN ramp end: frequencies whose ratio is above beta are kept (LLaMA: alpha 1, beta 32).
      # 32: Peng et al. 2023's beta for LLaMA.
      'yarn_beta': 32.0,
  }
  evaluation_options: ClassVar[tuple[str, ...]] = tuple(
      f'rope.{option}' for option in ('scaling', 'scale', 'original_length', 'yarn_alpha', 'yarn_beta'))

  def __init__(
      self,
      head_dim: int,
      base: float = 10000.0,
      *,
      fraction: float = 1.0,
      scaling: str = 'none',
      scale: float = 1.0,
      original_length: int = 0,
      yarn_alpha: float = 1.0,
      yarn_beta: float = 32.0,
      deterministic: bool = False,
  ):
    if head_dim % 2:
      raise ValueError(f'rope needs an even head width (model_dim / num_heads), got {head_dim}')
    if scaling not in SCALINGS:
      raise ValueError(f'rope scaling={scaling!r}; allowed: {", ".join(SCALINGS)}')
    self.head_dim = head_dim
    self.rotary_dim = rotary_width(head_dim, fraction)
    if self.rotary_dim < 2:
      raise ValueError(f'rope fraction={fraction} rotates no channel pair of a head of width {head_dim}')
    self.base = base
    self.scaling = scaling
    self.scale = scale
    self.original_length = original_length
    self.yarn_alpha = yarn_alpha
    self.yarn_beta = yarn_beta
    self.deterministic = deterministic
    if scaling == 'yarn' and original_length <= 0:
      raise ValueError('rope scaling=yarn needs original_length > 0 (or a known training length)')

  @classmethod
  def check_config(cls, config, dims: Dims, longest_sequence: int) -> None:
    super().check_config(config, dims, longest_sequence)
    require_even_head_dim(config, dims)
    r = config.rope
    if not 0 < r.fraction <= 1 or rotary_width(dims.head_dim, r.fraction) < 2:
      raise ValueError(
          f'config.encoding.rope.fraction={r.fraction} must be in (0, 1] and rotate at least one '
          f'channel pair of the {dims.head_dim}-wide heads; allowed: >= {2 / dims.head_dim:g}'
      )
    if not r.base > 1:
      raise ValueError(f'config.encoding.rope.base={r.base} must be > 1')
    if r.scaling not in SCALINGS:
      raise ValueError(f'config.encoding.rope.scaling={r.scaling!r} is unknown; allowed: {", ".join(SCALINGS)}')
    if not r.scale >= 1:
      raise ValueError(f'config.encoding.rope.scale={r.scale} must be >= 1 (the context grows s-fold)')
    if r.scaling == 'ntk' and rotary_width(dims.head_dim, r.fraction) <= 2:
      raise ValueError(
          'config.encoding.rope.scaling=ntk needs more than 2 rotated channels per head; '
          f'got {rotary_width(dims.head_dim, r.fraction)} (raise config.encoding.rope.fraction or the head width)'
      )
    if r.original_length < 0:
      raise ValueError(
          f'config.encoding.rope.original_length={r.original_length} must be >= 0 (0: the training length)'
      )
    if not 0 < r.yarn_alpha < r.yarn_beta:
      raise ValueError(
          f'config.encoding.rope.yarn_alpha={r.yarn_alpha}, yarn_beta={r.yarn_beta}: need 0 < alpha < beta'
      )

  @classmethod
  def from_config(cls, config, dims: Dims, rngs: nnx.Rngs):
    r = config.rope
    return cls(
        dims.head_dim,
        r.base,
        fraction=r.fraction,
        scaling=r.scaling,
        scale=r.scale,
        original_length=r.original_length or dims.train_length,
        yarn_alpha=r.yarn_alpha,
        yarn_beta=r.yarn_beta,
    )

  def frequencies(self) -> tuple[jax.Array, float]:
    """(theta [rotary_dim / 2], factor on q and k) in the current mode."""
    scaling = self.scaling if self.deterministic else 'none'
    return scaled_rope_frequencies(
        self.rotary_dim, self.base, scaling, self.scale, self.original_length, self.yarn_alpha, self.yarn_beta
    )

  def rotate(self, q_BxTxHxK, k_BxSxHxK, q_positions_BxT, k_positions_BxS):
    frequencies, factor = self.frequencies()
    q_BxTxHxK = rotate_leading(q_BxTxHxK, q_positions_BxT, frequencies, self.rotary_dim)
    k_BxSxHxK = rotate_leading(k_BxSxHxK, k_positions_BxS, frequencies, self.rotary_dim)
    if factor != 1.0:
      q_BxTxHxK, k_BxSxHxK = q_BxTxHxK * factor, k_BxSxHxK * factor
    return q_BxTxHxK, k_BxSxHxK


def rotate_leading(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, frequencies: jax.Array,
                   rotary_dim: int) -> jax.Array:
  """RoPE on the first `rotary_dim` channels of each head; the rest pass through."""
  if rotary_dim == x_BxTxHxK.shape[-1]:
    return apply_rotary(x_BxTxHxK, positions_BxT, frequencies)
  rotated = apply_rotary(x_BxTxHxK[..., :rotary_dim], positions_BxT, frequencies)
  return jnp.concatenate([rotated, x_BxTxHxK[..., rotary_dim:]], axis=-1)
