"""Pictures of a trained run at an in-distribution length and at longer ones (`probe`):

  attention_L<n>.png          per layer (rows) and head (columns), each answer slot's
                              attention (rows) over the sequence (columns: the input, then
                              the answer slots), mean over the examples. On reverse_string a
                              model that solves the task reads input position n - 1 - i at
                              answer slot i somewhere: an anti-diagonal in the input block;
                              where extrapolation fails one sees where it goes astray.
  entropy.png                 attention entropy of the answer slots against the input
                              length, per layer (mean over heads, band from the lowest to
                              the highest head), with the entropy of uniform attention, log n:
                              "dilution" is the entropy rising with n.
  accuracy_by_position.png    token accuracy per answer position (rows) and input length
                              (columns), white at chance: which output positions fail first.
"""

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from pe_research.inspect import figures
from pe_research.inspect.probe import Probe, RunModel


def _title(run: RunModel) -> str:
  return f'{run.config.encoding.name} on {run.task.name} (seed {run.seed}, step {run.step})'


def attention_maps(run: RunModel, probe: Probe, length: int, path: str) -> str:
  """The answer slots' attention maps at `length`, one panel per layer and head."""
  maps_LxHxOxT = probe.maps[length]
  layers, heads = maps_LxHxOxT.shape[:2]
  fig = Figure(figsize=(2.1 * heads + 0.4, 1.8 * layers + 0.8), layout='constrained')
  axes = fig.subplots(layers, heads, squeeze=False, sharex=True, sharey=True)
  for (layer, head), ax in np.ndenumerate(axes):
    panel = maps_LxHxOxT[layer, head]
    # Each panel to its own maximum (in its title): a diffuse head's weights are ~1/T.
    ax.imshow(panel, cmap='magma', aspect='auto', interpolation='nearest', vmin=0, vmax=panel.max())
    ax.axvline(length - 0.5, color='cyan', linewidth=0.8)  # Input | answer slots.
    ax.set_title(f'layer {layer}, head {head} (max {panel.max():.2f})', fontsize='small')
    if layer == layers - 1:
      ax.set_xlabel('key: input | answer slots')
    if head == 0:
      ax.set_ylabel('answer slot')
  seen = 'a training length' if length <= run.config.train.max_length else 'unseen length'
  fig.suptitle(f'{_title(run)}\nanswer slots\' attention at input length {length} ({seen}), mean over '
               f'{probe.batch_size} examples', fontsize='medium')
  return figures.save(fig, path)


def entropy(run: RunModel, probe: Probe, path: str) -> str:
  """Attention entropy of the answer slots against length, per layer."""
  fig = Figure(figsize=(7, 4.2), layout='constrained')
  ax = fig.subplots()
  for layer in range(probe.entropy.shape[1]):
    per_head = probe.entropy[:, layer]
    (line,) = ax.plot(probe.lengths, per_head.mean(-1), label=f'layer {layer} (mean over heads)')
    ax.fill_between(probe.lengths, per_head.min(-1), per_head.max(-1), color=line.get_color(), alpha=0.2, linewidth=0)
  ax.plot(probe.lengths, probe.uniform_entropy, color='black', linestyle='--', linewidth=1,
          label='uniform over the keys seen (log n)')
  figures.shade_training(ax, probe.lengths[0] - 0.5, run.config.train.max_length + 0.5, label='training lengths')
  ax.set(title=f'{_title(run)}\nattention entropy of the answer slots', xlabel='input length',
         ylabel='entropy (nats)', ylim=(0, None))
  ax.legend(fontsize='small')
  return figures.save(fig, path)


def accuracy_by_position(run: RunModel, probe: Probe, path: str) -> str:
  """Token accuracy per answer position and length, coloured from chance."""
  fig = Figure(figsize=(8, 4.2), layout='constrained')
  ax = fig.subplots()
  chance = run.task.chance_accuracy
  norm = TwoSlopeNorm(vcenter=chance, vmin=min(0.0, chance - 1e-6), vmax=max(1.0, chance + 1e-6))
  accuracy_OxN = probe.accuracy.T
  image = ax.imshow(accuracy_OxN, cmap='RdBu', norm=norm, aspect='auto', interpolation='nearest', origin='lower',
                    extent=(probe.lengths[0] - 0.5, probe.lengths[-1] + 0.5, -0.5, accuracy_OxN.shape[0] - 0.5))
  fig.colorbar(image, ax=ax, label=f'token accuracy (white: chance, {chance:.2f})')
  ax.axvline(run.config.train.max_length + 0.5, color='black', linewidth=1, linestyle='--',
             label='longest training length')
  ax.set(title=f'{_title(run)}\naccuracy by answer position ({probe.batch_size} examples per length)',
         xlabel='input length', ylabel='answer position')
  ax.legend(fontsize='small', loc='upper left')
  return figures.save(fig, path)


def write(run: RunModel, probe: Probe, out_dir: str) -> list[str]:
  """Every figure of the module docstring in `out_dir`; their paths."""
  paths = [attention_maps(run, probe, n, f'{out_dir}/attention_L{n}.png') for n in sorted(probe.maps)]
  paths.append(entropy(run, probe, f'{out_dir}/entropy.png'))
  paths.append(accuracy_by_position(run, probe, f'{out_dir}/accuracy_by_position.png'))
  return paths
