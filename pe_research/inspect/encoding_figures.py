"""Pictures of one positional encoding, computed by its own module (the hooks of
`pe_research.encodings.base`) inside a model built from the config, over the positions of
a sequence longer than training (the training range is shaded).

Input stage (`embed`: sinusoidal, learned, ...): the code C[p] = embed(0, p), what the
encoding adds to a zero token embedding (for a concatenated code, its projection), as a
heatmap of positions x channels; and the cosine similarity of C[p] and C[p'] for every
pair. Where it depends only on the offset p - p' it is constant along the diagonals; the
"offset spread", the mean over offsets of its standard deviation along a diagonal, says how
far it is from that (0 for the sinusoid, whose C[p].C[p'] = sum_k cos((p - p') w_k)).

Attention stage (`rotate`, `attention_terms`: RoPE, ALiBi, T5, KERPLE, FIRE, ...): what the
encoding adds to the logit of a query at position i for the key at position j, with fixed
q = k = 1 (every channel one, as in RoFormer's decay figure), as a function of the offset
d = i - j, on one sequence of contiguous positions:

    logit(i, j) - q.k / sqrt(K)      (the logits through the seam, `attention_logits`)

For a bias this is the bias itself; for RoPE, (2 sum_k cos(d theta_k) - K) / sqrt(K). One
panel per layer (rows) and query position (columns), one line per head; layers that give
the same curves (fixed encodings) are drawn once. Learned encodings are drawn with a trained
run's parameters when the model comes from one, else at initialisation (the title says
which). The model is the evaluation view (`deterministic=True`: RoPE's context extension
applies, as it does beyond training).
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from pe_research.inspect import figures
from pe_research.model.attention import attention_logits


class NothingToDraw(ValueError):
  """The model's encoding puts no position anywhere (NoPE)."""


def input_code(encoding, length: int, dim: int) -> np.ndarray:
  """C [length, dim]: what `encoding.embed` adds to a zero embedding at positions 0..length-1."""
  positions_1xP = jnp.arange(length)[None]
  return np.asarray(encoding.embed(jnp.zeros((1, length, dim)), positions_1xP)[0], np.float64)


def cosine_similarity(code_PxD: np.ndarray) -> np.ndarray:
  """[P, P] cosine similarity of every pair of rows."""
  unit_PxD = code_PxD / np.maximum(np.linalg.norm(code_PxD, axis=1, keepdims=True), 1e-12)
  return unit_PxD @ unit_PxD.T


def offset_spread(similarity_PxP: np.ndarray) -> float:
  """Mean over offsets d = 1 .. P-2 of the standard deviation of similarity[p, p + d] over
  p: 0 when the similarity depends on the offset alone."""
  length = similarity_PxP.shape[0]
  return float(np.mean([np.std(np.diagonal(similarity_PxP, d)) for d in range(1, length - 1)]))


def offset_logits(encoding, num_heads: int, head_dim: int, length: int, query_positions: list[int],
                  causal: bool) -> np.ndarray:
  """[Q, H, length]: for each query at one of `query_positions` of a sequence at positions
  0..length-1, what the encoding adds to its logit for every key j (module docstring); NaN
  where a causal query does not see the key."""
  keys_1xS = jnp.arange(length)[None]
  queries_1xQ = jnp.asarray(query_positions)[None]
  ones_q = jnp.ones((1, len(query_positions), num_heads, head_dim))
  ones_k = jnp.ones((1, length, num_heads, head_dim))
  q, k = encoding.rotate(ones_q, ones_k, queries_1xQ, keys_1xS)
  terms = encoding.attention_terms(q, k, queries_1xQ, keys_1xS)
  every_key = jnp.ones((1, 1, 1, length), bool)
  logits_1xHxQxS, visible = attention_logits(q, k, every_key, terms, rows_BxT=queries_1xQ, causal=causal)
  plain_1xHxQxS, _ = attention_logits(ones_q, ones_k, every_key, rows_BxT=queries_1xQ, causal=causal)
  added = np.where(np.broadcast_to(visible, logits_1xHxQxS.shape), logits_1xHxQxS - plain_1xHxQxS, np.nan)
  return added[0].transpose(1, 0, 2)


def _state(encodings: list, trained: bool) -> str:
  """Whose parameters the figure shows: 'fixed' when the encodings have none."""
  if not any(jax.tree.leaves(nnx.state(e, nnx.Param)) for e in encodings):
    return 'fixed (no parameters)'
  return 'trained parameters' if trained else 'parameters at initialisation'


def input_figure(name: str, code_PxD: np.ndarray, train_length: int, state: str, path: str) -> str:
  """The code heatmap and the similarity of positions, the training positions marked."""
  similarity = cosine_similarity(code_PxD)
  fig = Figure(figsize=(8.4, 3.3), layout='constrained')
  code_ax, similarity_ax = fig.subplots(1, 2, width_ratios=(1, 1.1))
  limit = np.abs(code_PxD).max()
  figures.heatmap(fig, code_ax, code_PxD, cmap='RdBu_r', vmin=-limit, vmax=limit, label='code value')
  code_ax.axhline(train_length - 0.5, color='black', linewidth=1, linestyle='--')
  code_ax.set(title=f'code C[p] (trained on p < {train_length}: above the line)', xlabel='channel',
              ylabel='position p')
  figures.heatmap(fig, similarity_ax, similarity, cmap='RdBu_r', vmin=-1, vmax=1, label='cosine similarity')
  for line in (similarity_ax.axhline, similarity_ax.axvline):
    line(train_length - 0.5, color='black', linewidth=1, linestyle='--')
  similarity_ax.set(title=f'cos(C[p], C[p\']): offset spread {offset_spread(similarity):.1e}', xlabel="position p'",
                    ylabel='position p')
  fig.suptitle(f'{name}: input code, {state}')
  return figures.save(fig, path)


def attention_figure(name: str, added_LxQxHxS: np.ndarray, query_positions: list[int], train_length: int,
                     causal: bool, state: str, path: str) -> str:
  """What the encoding adds to the logits against the offset (module docstring)."""
  same = lambda a, b: np.allclose(a, b, equal_nan=True)  # noqa: E731
  # Layers (heads) that give the same curves are drawn once.
  layers = [None] if all(same(added_LxQxHxS[0], a) for a in added_LxQxHxS) else range(added_LxQxHxS.shape[0])
  heads = [None] if all(same(added_LxQxHxS[:, :, 0], added_LxQxHxS[:, :, h]) for h in range(added_LxQxHxS.shape[2])
                        ) else range(added_LxQxHxS.shape[2])
  length = added_LxQxHxS.shape[-1]
  # As wide as three panels at least: the title and the legend take that much.
  fig = Figure(figsize=(3.4 * max(len(query_positions), 3), 2.5 * len(layers) + 0.6), layout='constrained')
  axes = fig.subplots(len(layers), len(query_positions), squeeze=False, sharex=True, sharey=True)
  for row, layer in enumerate(layers):
    for column, i in enumerate(query_positions):
      ax = axes[row, column]
      for head in heads:
        ax.plot(i - np.arange(length), added_LxQxHxS[layer or 0, column, head or 0], linewidth=1.2,
                label='every head' if head is None else f'head {head}')
      figures.shade_training(ax, 0 if causal else -(train_length - 1), train_length - 1,
                             label='offsets seen in training')
      ax.set_title(f'{"every layer" if layer is None else f"layer {layer}"}, query at position {i}', fontsize='medium')
      if row == len(layers) - 1:
        ax.set_xlabel('offset d = i - j')
      if column == 0:
        ax.set_ylabel('added to the logit')
  fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize='x-small', loc='outside right upper')
  fig.suptitle(f'{name}: logit(i, j) - q.k/sqrt(K) for q = k = 1, {state}')
  return figures.save(fig, path)


def write(name: str, model, train_length: int, length: int, trained: bool, out_dir: str, suffix: str = '') -> list[str]:
  """The figures of `model`'s encoding (named `name`) over positions 0..length-1, of which
  0..train_length-1 were placed in training (all of them when train_length >= length, as
  with a random sampler): the input-stage one and/or the attention-stage one, as
  `encoding_<name><suffix>.png` (with `_input` / `_attention` appended if it acts on both);
  their paths. `trained`: the model holds a trained run's parameters. Raises NothingToDraw
  for an encoding that adds no position, ValueError if it cannot take these positions (a
  learned table too short)."""
  train_length = min(train_length, length)
  attention = [block.attention for block in model.blocks if type(block.attention.encoding).acts_on_attention]
  stages = [stage for stage, present in (('input', model.input_encoding is not None), ('attention', attention))
            if present]
  if not stages:
    raise NothingToDraw(f'encoding {name!r} puts no position into the model (no input code, no attention term): '
                        'nothing to picture')
  path = lambda stage: f'{out_dir}/encoding_{name}{suffix}{f"_{stage}" if len(stages) > 1 else ""}.png'  # noqa: E731
  written = []
  if 'input' in stages:
    code = input_code(model.input_encoding, length, model.embed.features)
    written.append(input_figure(name, code, train_length, _state([model.input_encoding], trained), path('input')))
  if attention:
    query_positions = sorted({train_length // 2, train_length - 1, length - 1})
    added = np.stack([offset_logits(layer.encoding, layer.num_heads, layer.head_dim, length, query_positions,
                                    model.causal) for layer in attention])
    state = _state([layer.encoding for layer in attention], trained)
    written.append(attention_figure(name, added, query_positions, train_length, model.causal, state,
                                    path('attention')))
  return written
