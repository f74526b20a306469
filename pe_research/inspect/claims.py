"""The classic claims about positional encoding, as experiments: each computes its numbers,
draws a figure and states a verdict that follows from those numbers alone.

  add_vs_concat        "adding a position code equals concatenating it and projecting":
                       [x; PE] W = x W_x + PE W_p, numerically, in the `sinusoidal_concat`
                       module itself (and with W = [I; I] it is the addition); then the
                       two encodings trained (the concatenation's projection adds 2D^2 + D
                       parameters: the counts are reported, not matched).
  offset_linearity     "the sinusoid of p + d is a fixed linear map of the sinusoid of p":
                       M_d fitted by least squares, PE[p + d] ~ M_d PE[p] over p, and its
                       relative residual |PE[P + d] - M_d PE[P]| / |PE[P + d]|, over more
                       positions than channels (else any code fits); for the trained
                       learned table, whose trained rows are fewer than its channels, the
                       fit is judged on held-out positions (fitted on even p, tested on odd
                       p), for all three codes alike. And the map itself: R_d, a rotation by
                       d w_k of each frequency pair, gives PE[p + d] exactly.
  sqrt_dk              "dividing q.k by sqrt(d_k) keeps the logits' variance at 1 and the
                       softmax out of saturation": for i.i.d. N(0, 1) q and k, the variance
                       of q.k, and the softmax's largest weight and entropy over 64 keys,
                       against d_k, with and without the scaling.
  attention_scale      the same scaling in training: `model.attention_scale` 'sqrt_dk',
                       'none' and 'log_length' (Scalable-Softmax, a length-generalization
                       method) with sinusoidal codes, and 'log_length' with ALiBi, which
                       extrapolates in part.
  extrapolation        "sinusoidal codes extrapolate well to longer sequences": accuracy
                       against length for sinusoidal, learned, RoPE and ALiBi. Verdict from
                       the share of its above-chance accuracy a model keeps on unseen
                       lengths, (unseen - chance) / (in-distribution - chance).
  layer_norm           "pre-LayerNorm trains more easily than post-LayerNorm" (Xiong et al.
                       2020): training curves and length curves of both.

The training claims share nine runs of the protocol config (configs/claims.py, one field
changed each), run by `experiment.run` in `<workdir>/<arm>`: resumable, and a finished run
is not run again.
"""

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from pe_research import experiment, io, report
from pe_research.encodings.sinusoidal import Sinusoidal, SinusoidalConcat, sinusoid
from pe_research.inspect import figures, probe
from pe_research.training.train_step import training_from_config
from pe_research.validation import validate


class Arm(NamedTuple):
  """One training run of the claims: the protocol config with these fields."""

  name: str
  encoding: str = 'sinusoidal'
  attention_scale: str = 'sqrt_dk'
  norm: str = 'pre'


ARMS = (
    Arm('sinusoidal'),
    Arm('sinusoidal_concat', encoding='sinusoidal_concat'),
    Arm('learned', encoding='learned'),
    Arm('rope', encoding='rope'),
    Arm('alibi', encoding='alibi'),
    Arm('sinusoidal,scale=none', attention_scale='none'),
    Arm('sinusoidal,scale=log_length', attention_scale='log_length'),
    Arm('sinusoidal,norm=post', norm='post'),
    Arm('alibi,scale=log_length', encoding='alibi', attention_scale='log_length'),
)
# Differences in accuracy below this many points are reported as none (1-2 seeds).
SAME_POINTS = 3.0
# A verdict on extrapolation: the share of the above-chance accuracy kept on unseen lengths.
KEEPS_WELL, KEEPS_PARTLY = 0.9, 0.5


class Verdict(NamedTuple):
  """A claim's outcome: its statement, the verdict, the numbers behind it, its figure."""

  claim: str
  verdict: str
  numbers: str
  figure: str

  def line(self) -> str:
    return f'{self.claim}: {self.verdict}: {self.numbers}'


@dataclasses.dataclass
class Result:
  """A finished arm: accuracy per length (mean over seeds), the summary's scores, the
  training curve (mean over seeds per record step), the parameter count and the run's wall
  time (training and evaluation, when it ran)."""

  lengths: np.ndarray
  accuracy: np.ndarray
  in_distribution: float
  unseen: float
  chance: float
  train_max_length: int
  steps: np.ndarray
  train_loss: np.ndarray
  train_accuracy: np.ndarray
  parameters: int
  workdir: str
  wall_time_s: float = math.nan


def arm_config(base, arm: Arm):
  """The protocol config `base` with the arm's fields."""
  config = base.copy_and_resolve_references()
  config.encoding.name = arm.encoding
  config.model.attention_scale = arm.attention_scale
  config.model.norm = arm.norm
  return config


def parameter_count(config, task) -> int:
  """Parameters of one model of `config`."""
  abstract = training_from_config(config, task).abstract
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def _mean_by(records: list[dict], key: str, field: str) -> tuple[np.ndarray, np.ndarray]:
  """(sorted values of `key`, mean of `field` over the records of each)."""
  grouped = {}
  for r in records:
    if r.get(field) is not None:
      grouped.setdefault(r[key], []).append(r[field])
  keys = np.array(sorted(grouped))
  return keys, np.array([np.mean(grouped[k]) for k in keys])


def train_arms(base, workdir: str, arms: tuple[Arm, ...] = ARMS, log=print) -> dict[str, Result]:
  """Runs (or finds finished) each arm in `<workdir>/<arm.name>`; their results."""
  results = {}
  for arm in arms:
    config = arm_config(base, arm)
    task = validate(config)
    run_dir = os.path.join(workdir, arm.name)
    start = time.perf_counter()
    experiment.run(config, run_dir)
    _, summary, records = report.load_run(run_dir)
    lengths, accuracy = _mean_by(records, 'length', 'token_accuracy')
    train_records = io.read_jsonl(os.path.join(run_dir, 'train.jsonl'))
    steps, loss = _mean_by(train_records, 'step', 'loss')
    _, train_accuracy = _mean_by(train_records, 'step', 'token_accuracy')
    results[arm.name] = Result(lengths, accuracy, summary['in_distribution_accuracy'],
                               summary['unseen_lengths_accuracy'], summary['chance_accuracy'], config.train.max_length,
                               steps, loss, train_accuracy, parameter_count(config, task), run_dir,
                               summary['wall_time_s'])
    log(f'{arm.name}: in-distribution {100 * results[arm.name].in_distribution:.1f}%, unseen lengths '
        f'{100 * results[arm.name].unseen:.1f}% ({time.perf_counter() - start:.0f} s)')
  return results


def _scores(result: Result) -> str:
  return f'{100 * result.in_distribution:.1f}% / {100 * result.unseen:.1f}%'


def underfit(result: Result) -> bool:
  """Whether the arm did not learn its training lengths (as reports flag it): its unseen
  lengths then say little about extrapolation."""
  return result.in_distribution < report.UNDERFIT_THRESHOLD


def _plot_lengths(ax, results: dict[str, Result], labels: dict[str, str] | None = None) -> None:
  """Accuracy against length, one line per result (underfit ones dashed and faded, as in
  reports); training lengths shaded, chance dashed."""
  first = next(iter(results.values()))
  for name, result in results.items():
    faded = dict(linestyle='--', alpha=0.6) if underfit(result) else {}
    ax.plot(result.lengths, result.accuracy, label=(labels or {}).get(name, name) + ' (underfit)' * underfit(result),
            **faded)
  figures.shade_training(ax, first.lengths[0] - 0.5, first.train_max_length + 0.5, label='training lengths')
  ax.axhline(first.chance, color='black', linestyle='--', linewidth=1, label='chance')
  ax.set(xlabel='input length', ylabel='token accuracy', ylim=(0, 1.02))
  ax.legend(fontsize='small')


# --- add vs concatenate -------------------------------------------------------------


def concat_identity(dim: int = 64, length: int = 48, seed: int = 0) -> tuple[float, float]:
  """(max |[x; PE] W + b - (x W_x + PE W_p + b)|, max |[x; PE] [I; I] - (x + PE)|) for random
  x and the `sinusoidal_concat` module's own (random) projection."""
  x_BxTxD = jax.random.normal(jax.random.key(seed), (2, length, dim))
  positions_BxT = jnp.broadcast_to(jnp.arange(length), (2, length))
  concat = SinusoidalConcat(dim, nnx.Rngs(seed))
  kernel_2DxD, bias_D = concat.projection.kernel[...], concat.projection.bias[...]
  split = x_BxTxD @ kernel_2DxD[:dim] + sinusoid(positions_BxT, dim) @ kernel_2DxD[dim:] + bias_D
  projected = float(jnp.max(jnp.abs(concat.embed(x_BxTxD, positions_BxT) - split)))
  concat.projection.kernel.set_value(jnp.concatenate([jnp.eye(dim), jnp.eye(dim)]))
  concat.projection.bias.set_value(jnp.zeros(dim))
  added = Sinusoidal(dim).embed(x_BxTxD, positions_BxT)
  return projected, float(jnp.max(jnp.abs(concat.embed(x_BxTxD, positions_BxT) - added)))


def add_vs_concat(results: dict[str, Result], model, out_dir: str) -> list[Verdict]:
  projected, as_addition = concat_identity(model.model_dim)
  add, concat = results['sinusoidal'], results['sinusoidal_concat']
  fig = Figure(figsize=(7, 4.2), layout='constrained')
  ax = fig.subplots()
  _plot_lengths(ax, {'add': add, 'concat': concat}, {
      'add': f'sinusoidal, added ({add.parameters:,} parameters)',
      'concat': f'sinusoidal_concat, concatenated and projected ({concat.parameters:,})'})
  ax.set_title(f'[x; PE] W = x W_x + PE W_p: max difference {projected:.1e}; with W = [I; I], = x + PE: '
               f'{as_addition:.1e}', fontsize='small')
  path = figures.save(fig, f'{out_dir}/claim_add_vs_concat.png')
  identity = Verdict(
      'adding a position code equals concatenating it and projecting (algebra)',
      'supported' if max(projected, as_addition) < 1e-4 else 'not supported',
      f'[x; PE] W = x W_x + PE W_p to {projected:.1e} (float32), and with W = [I; I] the concatenation is the '
      f'addition to {as_addition:.1e}: concatenating and projecting adds a learned projection of the code',
      path)
  differs = max(abs(add.in_distribution - concat.in_distribution), abs(add.unseen - concat.unseen)) * 100
  training = Verdict(
      'adding and concatenating train alike (reverse_string)',
      'no difference' if differs < SAME_POINTS else 'they differ',
      f'in-distribution / unseen lengths: added {_scores(add)} ({add.parameters:,} parameters), concatenated '
      f'{_scores(concat)} ({concat.parameters:,} parameters, +{concat.parameters - add.parameters:,} for the '
      f'projection); largest difference {differs:.1f} points',
      path)
  return [identity, training]


# --- offset linearity ----------------------------------------------------------------


def offset_residual(code_PxD: np.ndarray, offset: int, held_out: bool = False) -> float:
  """Relative residual |C[P + d] - C[P] M_d| / |C[P + d]| of the least-squares M_d over the
  positions p with p + d in the code; `held_out`: M_d fitted on even p, judged on odd p."""
  p = np.arange(code_PxD.shape[0] - offset)
  fit, judged = (p[p % 2 == 0], p[p % 2 == 1]) if held_out else (p, p)
  m_DxD = np.linalg.lstsq(code_PxD[fit], code_PxD[fit + offset], rcond=None)[0]
  target = code_PxD[judged + offset]
  return float(np.linalg.norm(code_PxD[judged] @ m_DxD - target) / np.linalg.norm(target))


def sinusoid_rotation(dim: int, offset: int, base: float = 10000.0) -> np.ndarray:
  """R_d [D, D], PE[p + d] = R_d PE[p] (column vectors): for each frequency w_k, the rotation
  of the pair (sin p w_k, cos p w_k) by d w_k."""
  rotation = np.zeros((dim, dim))
  for k in range(dim // 2):
    angle = offset * base ** (-2 * k / dim)
    c, s = math.cos(angle), math.sin(angle)
    # sin(a + b) = sin a cos b + cos a sin b; cos(a + b) = cos a cos b - sin a sin b.
    rotation[2 * k:2 * k + 2, 2 * k:2 * k + 2] = [[c, s], [-s, c]]
  return rotation


def learned_table(result: Result) -> np.ndarray:
  """The trained rows (positions of the longest training sequence) of the learned run's
  position table, first seed."""
  run = probe.load(result.workdir)
  return np.asarray(run.model.input_encoding.table.embedding[...][:run.train_length], np.float64)


def offset_linearity(results: dict[str, Result], model, out_dir: str) -> list[Verdict]:
  return [linear_offsets(learned_table(results['learned']), model.model_dim, out_dir)]


def linear_offsets(learned_table_PxD: np.ndarray | None, dim: int, out_dir: str, positions: int = 256,
                   seed: int = 0) -> Verdict:
  """The claim on the sinusoid, against a random code and (if given) a trained learned table's
  trained rows (module docstring)."""
  offsets = np.arange(1, 17)
  code = np.asarray(sinusoid(jnp.arange(positions), dim), np.float64)
  random = np.random.default_rng(seed).normal(size=(positions, dim))
  fitted = {'sinusoidal': [offset_residual(code, d) for d in offsets],
            'random code': [offset_residual(random, d) for d in offsets]}
  rotation_error = max(np.abs(code[d:] - code[:-d] @ sinusoid_rotation(dim, d).T).max() for d in offsets)
  trained_rows = 0 if learned_table_PxD is None else learned_table_PxD.shape[0]
  held_out = {}
  if trained_rows:
    short_offsets = offsets[offsets <= trained_rows // 4]
    held_out = {'sinusoidal': code[:trained_rows], 'learned (trained)': learned_table_PxD,
                'random code': random[:trained_rows]}
    held_out = {name: [offset_residual(c, d, held_out=True) for d in short_offsets] for name, c in held_out.items()}

  fig = Figure(figsize=(13, 4), layout='constrained')
  fit_ax, held_ax, rotation_ax = fig.subplots(1, 3, width_ratios=(1, 1, 0.9))
  for name, residuals in fitted.items():
    fit_ax.semilogy(offsets, np.maximum(residuals, 1e-12), marker='o', markersize=3, label=name)
  fit_ax.set(title=f'fitted over {positions} positions ({dim} channels)', xlabel='offset d',
             ylabel='relative residual of PE[p+d] ~ M_d PE[p]')
  fit_ax.legend(fontsize='small')
  for name, residuals in held_out.items():
    held_ax.semilogy(short_offsets, np.maximum(residuals, 1e-12), marker='o', markersize=3, label=name)
  held_ax.set(title=f'the {trained_rows} trained positions:\nfitted on even p, judged on odd p', xlabel='offset d')
  if held_out:
    held_ax.legend(fontsize='small')
  shown = 8
  limit = 1.0
  figures.heatmap(fig, rotation_ax, sinusoid_rotation(dim, shown)[:16, :16], cmap='RdBu_r', vmin=-limit, vmax=limit)
  rotation_ax.set(title=f'R_{shown} (first 16 channels): a rotation per pair;\n|PE[p+d] - R_d PE[p]| <= '
                        f'{rotation_error:.1e}', xlabel='channel', ylabel='channel')
  path = figures.save(fig, f'{out_dir}/claim_offset_linearity.png')

  sinusoidal, random_fit = max(fitted['sinusoidal']), min(fitted['random code'])
  numbers = (f'relative residual of the best M_d over {positions} positions, d = 1..{offsets[-1]}: sinusoidal '
             f'<= {sinusoidal:.1e}, a random code >= {random_fit:.2f}; the rotation per frequency pair gives PE[p+d] '
             f'to {rotation_error:.1e}')
  if held_out:
    numbers += (f'; on the {trained_rows} trained positions, held out (d <= {short_offsets[-1]}): sinusoidal <= '
                f'{max(held_out["sinusoidal"]):.1e}, learned (trained) {min(held_out["learned (trained)"]):.2f}..'
                f'{max(held_out["learned (trained)"]):.2f}, random {min(held_out["random code"]):.2f}..'
                f'{max(held_out["random code"]):.2f}')
  supported = sinusoidal < 1e-5 and random_fit > 0.1
  return Verdict('the sinusoid of p + d is a fixed linear map (a rotation per frequency pair) of the sinusoid of p',
                 'supported for sinusoidal' if supported else 'not supported', numbers, path)


# --- sqrt(d_k) -----------------------------------------------------------------------


def softmax_statistics(head_dims, num_queries: int = 512, num_keys: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
  """For q, k i.i.d. N(0, 1) of each width d_k: the variance of q.k and the softmax's mean
  largest weight and entropy over `num_keys` keys, unscaled and divided by sqrt(d_k)."""
  rng = np.random.default_rng(seed)
  stats = {f'{name}_{scaled}': [] for name in ('variance', 'max_weight', 'entropy') for scaled in ('none', 'sqrt_dk')}
  for d_k in head_dims:
    q, k = rng.normal(size=(num_queries, d_k)), rng.normal(size=(num_keys, d_k))
    for scaled, logits in (('none', q @ k.T), ('sqrt_dk', q @ k.T / math.sqrt(d_k))):
      weights = np.exp(logits - logits.max(-1, keepdims=True))
      weights /= weights.sum(-1, keepdims=True)
      stats[f'variance_{scaled}'].append(logits.var())
      stats[f'max_weight_{scaled}'].append(weights.max(-1).mean())
      stats[f'entropy_{scaled}'].append(-np.sum(np.where(weights > 0, weights * np.log(weights), 0.0), -1).mean())
  return {name: np.asarray(values) for name, values in stats.items()}


def sqrt_dk(results: dict[str, Result], model, out_dir: str, num_keys: int = 64) -> list[Verdict]:
  del results, model  # Random q and k only.
  head_dims = 2 ** np.arange(1, 10)
  stats = softmax_statistics(head_dims, num_keys=num_keys)
  fig = Figure(figsize=(12, 3.6), layout='constrained')
  axes = fig.subplots(1, 3)
  for ax, name, ylabel in zip(axes, ('variance', 'max_weight', 'entropy'),
                              ('variance of the logits', 'largest softmax weight', 'softmax entropy (nats)')):
    for scaled, label in (('none', 'q.k'), ('sqrt_dk', 'q.k / sqrt(d_k)')):
      ax.plot(head_dims, stats[f'{name}_{scaled}'], marker='o', markersize=3, label=label)
    ax.set(xscale='log', xlabel='d_k', ylabel=ylabel)
    ax.set_xticks(head_dims, [str(d) for d in head_dims])
  axes[0].set_yscale('log')
  axes[2].axhline(math.log(num_keys), color='black', linestyle='--', linewidth=1, label=f'uniform, log {num_keys}')
  axes[1].axhline(1 / num_keys, color='black', linestyle='--', linewidth=1, label=f'uniform, 1/{num_keys}')
  for ax in axes:
    ax.legend(fontsize='small')
  fig.suptitle(f'q, k i.i.d. N(0, 1), softmax over {num_keys} keys', fontsize='medium')
  path = figures.save(fig, f'{out_dir}/claim_sqrt_dk.png')
  scaled, unscaled = stats['variance_sqrt_dk'], stats['variance_none'] / head_dims
  supported = np.all(np.abs(scaled - 1) < 0.2) and np.all(np.abs(unscaled - 1) < 0.2)
  last = -1
  numbers = (f'var(q.k / sqrt(d_k)) = {scaled.min():.2f}..{scaled.max():.2f} for d_k = {head_dims[0]}..'
             f'{head_dims[last]}, while var(q.k) / d_k = {unscaled.min():.2f}..{unscaled.max():.2f}; over {num_keys} '
             f'keys at d_k = {head_dims[last]}, unscaled: largest weight {stats["max_weight_none"][last]:.2f}, entropy '
             f'{stats["entropy_none"][last]:.2f} nats; scaled: {stats["max_weight_sqrt_dk"][last]:.2f}, '
             f'{stats["entropy_sqrt_dk"][last]:.2f} (uniform: {1 / num_keys:.3f}, {math.log(num_keys):.2f})')
  return [Verdict('dividing q.k by sqrt(d_k) keeps the logits\' variance at 1 and the softmax out of saturation',
                  'supported' if supported else 'not supported', numbers, path)]


def _change(points: float, what: str) -> str:
  """'<what> +x.x points', or that it makes no difference (below SAME_POINTS)."""
  return f'{what} {points:+.1f} points' if abs(points) >= SAME_POINTS else f'{what}: no difference'


def attention_scale(results: dict[str, Result], model, out_dir: str) -> list[Verdict]:
  head_dim = model.model_dim // model.num_heads
  labels = {'sqrt_dk': 'q.k / sqrt(d_k) (default)', 'none': 'q.k (no scaling)',
            'log_length': 's log(n) q.k / sqrt(d_k) (Scalable-Softmax)'}
  sinusoidal = {'sqrt_dk': results['sinusoidal'], 'none': results['sinusoidal,scale=none'],
                'log_length': results['sinusoidal,scale=log_length']}
  alibi = {'sqrt_dk': results['alibi'], 'log_length': results['alibi,scale=log_length']}
  fig = Figure(figsize=(12, 4.2), layout='constrained')
  for ax, (name, arms) in zip(fig.subplots(1, 2, sharey=True), (('sinusoidal', sinusoidal), ('alibi', alibi))):
    _plot_lengths(ax, arms, labels)
    ax.set_title(f'{name}: model.attention_scale (d_k = {head_dim})', fontsize='medium')
  path = figures.save(fig, f'{out_dir}/claim_attention_scale.png')
  unscaled = 100 * (sinusoidal['none'].in_distribution - sinusoidal['sqrt_dk'].in_distribution)
  gains = {name: 100 * (arms['log_length'].unseen - arms['sqrt_dk'].unseen)
           for name, arms in (('sinusoidal', sinusoidal), ('alibi', alibi))}
  verdict = '; '.join([_change(unscaled, 'no scaling, in distribution'),
                       *(_change(gain, f'log_length on unseen lengths ({name})') for name, gain in gains.items())])
  numbers = (f'in-distribution / unseen lengths at d_k = {head_dim}: sinusoidal with sqrt_dk '
             f'{_scores(sinusoidal["sqrt_dk"])}, none {_scores(sinusoidal["none"])}, log_length '
             f'{_scores(sinusoidal["log_length"])}; alibi with sqrt_dk {_scores(alibi["sqrt_dk"])}, log_length '
             f'{_scores(alibi["log_length"])}')
  return [Verdict('the scaling in training: none vs sqrt(d_k); Scalable-Softmax for longer inputs', verdict, numbers,
                  path)]


# --- sinusoidal extrapolates ---------------------------------------------------------


def kept_share(result: Result) -> float:
  """(unseen - chance) / (in-distribution - chance): the share of its above-chance accuracy
  a model keeps on unseen lengths."""
  return (result.unseen - result.chance) / max(result.in_distribution - result.chance, 1e-9)


def extrapolation(results: dict[str, Result], model, out_dir: str) -> list[Verdict]:
  del model
  arms = {name: results[name] for name in ('sinusoidal', 'learned', 'rope', 'alibi')}
  fig = Figure(figsize=(7, 4.2), layout='constrained')
  ax = fig.subplots()
  _plot_lengths(ax, arms, {name: f'{name} (keeps {100 * kept_share(r):.0f}% above chance)'
                           for name, r in arms.items()})
  ax.set_title('reverse_string: does the sinusoid extrapolate?', fontsize='medium')
  path = figures.save(fig, f'{out_dir}/claim_sinusoidal_extrapolates.png')
  sinusoidal = arms['sinusoidal']
  learned_arms = [name for name, r in arms.items() if not underfit(r)]
  best = max(learned_arms or arms, key=lambda name: arms[name].unseen)
  share = kept_share(sinusoidal)
  if underfit(sinusoidal):
    verdict = 'undecided (sinusoidal did not learn its training lengths)'
  else:
    verdict = 'supported' if share >= KEEPS_WELL else 'partly' if share >= KEEPS_PARTLY else 'not supported'
  others = ', '.join(f'{name} {100 * r.unseen:.1f}%' + (f' (underfit: {100 * r.in_distribution:.1f}% in '
                                                         'distribution)' if underfit(r) else '')
                     for name, r in arms.items() if name != 'sinusoidal')
  numbers = (f'sinusoidal: unseen-lengths accuracy {100 * sinusoidal.unseen:.1f}% against chance '
             f'{100 * sinusoidal.chance:.0f}% and {100 * sinusoidal.in_distribution:.1f}% in distribution (keeps '
             f'{100 * share:.0f}% of its accuracy above chance); {others}; best of those that learned the training '
             f'lengths: {best}')
  return [Verdict('sinusoidal codes extrapolate well to longer sequences', verdict, numbers, path)]


# --- LayerNorm placement -------------------------------------------------------------


def steps_to(result: Result, accuracy: float = 0.95) -> int | None:
  """The first recorded step at which the mean training token accuracy reaches `accuracy`."""
  reached = np.nonzero(result.train_accuracy >= accuracy)[0]
  return int(result.steps[reached[0]]) if reached.size else None


def layer_norm(results: dict[str, Result], model, out_dir: str) -> list[Verdict]:
  del model
  pre, post = results['sinusoidal'], results['sinusoidal,norm=post']
  fig = Figure(figsize=(11, 4), layout='constrained')
  loss_ax, length_ax = fig.subplots(1, 2)
  for name, result in (('pre-LN', pre), ('post-LN', post)):
    loss_ax.semilogy(result.steps, result.train_loss, label=name)
  loss_ax.set(title='training loss (means between records)', xlabel='step', ylabel='cross-entropy')
  loss_ax.legend(fontsize='small')
  _plot_lengths(length_ax, {'pre-LN': pre, 'post-LN': post})
  length_ax.set_title('accuracy against length', fontsize='medium')
  fig.suptitle('sinusoidal, LayerNorm before (pre) or after (post) each sublayer', fontsize='medium')
  path = figures.save(fig, f'{out_dir}/claim_layer_norm.png')
  pre_steps, post_steps = steps_to(pre), steps_to(post)
  if pre_steps is None and post_steps is None:
    verdict = 'undecided (neither reaches 95% training accuracy)'
  elif post_steps is None or (pre_steps is not None and post_steps - pre_steps > 200):
    verdict = 'supported'
  elif pre_steps is None or pre_steps - post_steps > 200:
    verdict = 'not supported (post-LN trains faster here)'
  else:
    verdict = 'no difference at this depth'
  reach = lambda steps: 'never' if steps is None else f'at step {steps}'  # noqa: E731
  numbers = (f'95% training token accuracy: pre-LN {reach(pre_steps)}, post-LN {reach(post_steps)}; final training '
             f'loss {pre.train_loss[-1]:.2g} vs {post.train_loss[-1]:.2g}; in-distribution / unseen lengths: pre '
             f'{_scores(pre)}, post {_scores(post)}')
  return [Verdict('pre-LayerNorm trains more easily than post-LayerNorm (Xiong et al. 2020)', verdict, numbers,
                  path)]


# --- all of them ---------------------------------------------------------------------


def markdown(verdicts: list[Verdict], results: dict[str, Result], base, command: str, minutes: float,
             out_dir: str) -> str:
  """claims.md: the verdicts with their numbers and figures, the runs, the command."""
  m, t = base.model, base.train
  lines = ['# Claims about positional encoding, tested', '',
           f'Command: `{command}`: {minutes:.1f} min on this machine, besides the runs\' own '
           f'{sum(r.wall_time_s for r in results.values()) / 60:.1f} min of training and evaluation (runs found '
           'finished are not run again). Training protocol (configs/claims.py and '
           f'the command\'s overrides): {base.task.name}, {m.num_layers} layers of width {m.model_dim} with '
           f'{m.num_heads} heads, lengths {t.min_length}..{t.max_length}, tested to {base.eval.max_length}, '
           f'{t.steps:,} steps ({t.schedule} schedule), {base.num_seeds} seed(s); one field changed per run. '
           'Accuracies are token accuracies, mean over seeds: in distribution / unseen lengths.', '',
           '| claim | verdict | numbers | figure |', '|---|---|---|---|']
  lines += [f'| {v.claim} | **{v.verdict}** | {v.numbers} | [{os.path.basename(v.figure)}]'
            f'({os.path.relpath(v.figure, out_dir)}) |' for v in verdicts]
  lines += ['', '| run | parameters | in-distribution | unseen lengths | wall time |', '|---|---|---|---|---|']
  lines += [f'| {name}{" (underfit)" * underfit(r)} | {r.parameters:,} | {100 * r.in_distribution:.1f}% | '
            f'{100 * r.unseen:.1f}% | {r.wall_time_s:.0f} s |' for name, r in results.items()]
  figures_seen = list(dict.fromkeys(v.figure for v in verdicts))
  lines += ['', *(f'![{os.path.basename(f)}]({os.path.relpath(f, out_dir)})' for f in figures_seen)]
  return '\n'.join(lines) + '\n'


class Claim(NamedTuple):
  """A claim's test, `test(results, model config section, out_dir) -> verdicts`, and the arms
  it reads."""

  test: Callable[[dict[str, Result], object, str], list[Verdict]]
  arms: tuple[str, ...]


CLAIMS = {
    'add_vs_concat': Claim(add_vs_concat, ('sinusoidal', 'sinusoidal_concat')),
    'offset_linearity': Claim(offset_linearity, ('learned',)),
    'sqrt_dk': Claim(sqrt_dk, ()),
    'attention_scale': Claim(attention_scale, ('sinusoidal', 'sinusoidal,scale=none', 'sinusoidal,scale=log_length',
                                               'alibi', 'alibi,scale=log_length')),
    'extrapolation': Claim(extrapolation, ('sinusoidal', 'learned', 'rope', 'alibi')),
    'layer_norm': Claim(layer_norm, ('sinusoidal', 'sinusoidal,norm=post')),
}


def run(base, workdir: str, out_dir: str, command: str, names=tuple(CLAIMS), log=print) -> list[Verdict]:
  """Trains (or finds) the arms the claims `names` read, tests them, writes the figures and
  claims.md to `out_dir` and logs each verdict's line; the verdicts."""
  start = time.perf_counter()
  os.makedirs(out_dir, exist_ok=True)
  needed = {arm for name in names for arm in CLAIMS[name].arms}
  results = train_arms(base, workdir, [arm for arm in ARMS if arm.name in needed], log=log)
  verdicts = [verdict for name in names for verdict in CLAIMS[name].test(results, base.model, out_dir)]
  for verdict in verdicts:
    log(verdict.line())
  minutes = (time.perf_counter() - start) / 60
  io.write_text_atomic(os.path.join(out_dir, 'claims.md'), markdown(verdicts, results, base, command, minutes, out_dir))
  return verdicts
