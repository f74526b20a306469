"""Kazemnejad et al. 2023 (The Impact of Positional Encoding on Length Generalization in
Transformers, arXiv 2305.19466): a causal decoder without positional encoding (NoPE)
against the usual encodings, on copy-like and arithmetic tasks.

    python -m pe_research.sweep --sweep=configs/sweeps/kazemnejad2023.py --workdir=runs/kazemnejad2023

Protocol, sized for a 2-core CPU: causal attention (a decoder: NoPE can infer order
through the mask), 3 layers, width 64, 4 heads; lengths 1..10, every length up to 20
tested (the paper trains up to 20 and tests up to 40: halved here); 8,000 steps of batch
32 at 1e-3 with a cosine decay; 2 seeds per cell (the paper: 3). Tasks: copy,
reverse_string, sort, addition, parity_check; encodings: none, t5_bias, alibi, rope,
learned, sinusoidal. 30 cells. Deviations: their model is T5-base sized (about 107M
parameters) and generates its answers autoregressively; here answers are read at
placeholder slots.

Expected (measured; docs/results.md has the tables, the verdicts that
scripts/results_tables.py computes from the committed records, and the plots): every cell
learns its task; by exact match beyond training, ranked among the paper's encodings with
shared ranks, NoPE is first and sinusoidal codes last, as in the paper, and T5's bias
fourth (the paper: second). Cost on the 2-core CPU (AMD EPYC): a median of 214 s a cell,
1.9 hours of recorded cell time for the 30 cells (one process per core, beside another
sweep).
"""

import os

from pe_research import sweep

DEFAULT = os.path.join(os.path.dirname(__file__), os.pardir, 'default.py')


def get_config():
  base = sweep.load_config(DEFAULT)
  base.num_seeds = 2
  base.model.update(causal=True, num_layers=3)
  base.train.update(steps=8000, schedule='cosine', checkpoint_every=2000, min_length=1, max_length=10)
  base.eval.max_length = 20
  return sweep.make(base, {
      'task.name': ['copy', 'reverse_string', 'sort', 'addition', 'parity_check'],
      'encoding.name': ['none', 't5_bias', 'alibi', 'rope', 'learned', 'sinusoidal'],
  })
