"""Kazemnejad et al. 2023 (The Impact of Positional Encoding on Length Generalization in
Transformers): a causal decoder without positional encoding (NoPE) against the usual ones.

    python -m pe_research.sweep --sweep=configs/sweeps/kazemnejad2023.py --workdir=runs/kazemnejad2023

Protocol: decoder-only (causal) Transformer, training lengths 1..20, every length up to 40
tested, 3 seeds per cell trained together, as in the paper. Deviations: the paper's model is
T5-base sized (about 107M parameters) and its tasks are seq2seq text with scratchpad
variants; here the default small model (2 layers, width 64) on this package's copy,
reverse_string, addition, sort and parity_check, with answers read at placeholder slots.

Expected cost: 5 tasks x 6 encodings = 30 cells of 5,000 steps; 5 to 10 minutes a cell on a
2-core CPU (measured: 3 seeds of addition train at about 18 steps/s), 3 to 5 hours in all.
"""

import os

from pe_research import sweep

DEFAULT = os.path.join(os.path.dirname(__file__), os.pardir, 'default.py')


def get_config():
  base = sweep.load_config(DEFAULT)
  base.num_seeds = 3
  base.model.causal = True
  base.train.update(steps=5000, min_length=1, max_length=20)
  base.eval.max_length = 40
  return sweep.make(base, {
      'task.name': ['copy', 'reverse_string', 'addition', 'sort', 'parity_check'],
      'encoding.name': ['none', 't5_bias', 'alibi', 'rope', 'learned', 'sinusoidal'],
  })
