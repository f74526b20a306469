"""What every inspection figure shares: small PNGs written atomically, the training range
shaded, heatmaps with a colour bar."""

import os

import numpy as np
from matplotlib.figure import Figure

# Pixels per inch of the PNGs: figures of 7-13 inches come out 630-1170 pixels wide, 40-100 KB
# each (docs/figures/ holds twenty of them in the repository: about 1 MB).
DPI = 90


def save(fig: Figure, path: str) -> str:
  """Writes `fig` to `path` as a PNG, atomically (a temporary file renamed over it);
  returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(f'{path}.tmp', format='png', dpi=DPI)
  os.replace(f'{path}.tmp', path)
  return path


def shade_training(ax, low: float, high: float, vertical: bool = True, label: str | None = 'training range') -> None:
  """Shades [low, high] on the x axis (on the y axis if not `vertical`)."""
  span = ax.axvspan if vertical else ax.axhspan
  span(low, high, color='grey', alpha=0.15, linewidth=0, label=label)


def heatmap(fig: Figure, ax, matrix: np.ndarray, *, cmap: str = 'viridis', label: str = '', **kwargs):
  """`matrix` drawn cell by cell (rows down, columns across) with a colour bar."""
  image = ax.imshow(matrix, cmap=cmap, aspect='auto', interpolation='nearest', **kwargs)
  fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.03)
  return image
