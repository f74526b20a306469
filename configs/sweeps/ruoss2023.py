"""Ruoss et al. 2023 (Randomized Positional Encodings Boost Length Generalization of
Transformers): the Chomsky-hierarchy tasks x encodings, each with contiguous positions
and with randomized ones.

    python -m pe_research.sweep --sweep=configs/sweeps/ruoss2023.py --workdir=runs/ruoss2023

Protocol: that of Deletang et al. (configs/default.py:paper: 5 layers, width 64, 8 heads,
batch 128, training lengths 1..40, tested 41..500). The randomized variant draws each
training example's positions as a sorted random subset of [0, 2048)
(encoding.positions.sampler='randomized', positions.max_length=2048) and, as the authors'
code does, at evaluation too. 3 seeds per cell trained together; the paper reports the best
seed and trains far longer than the 10,000 steps here (raise --sweep.base.train.steps).

Expected cost: 15 tasks x 6 encodings x 2 samplers = 180 cells, each as costly as a cell of
configs/sweeps/deletang2023.py (roughly 1.5 hours on a 2-core CPU): a sweep for an
accelerator. A first look on a CPU, a few minutes a cell: --sweep.base.train.steps=1000
--sweep.base.eval.max_length=100 --sweep.base.num_seeds=1.
"""

import os

from pe_research import sweep

DEFAULT = os.path.join(os.path.dirname(__file__), os.pardir, 'default.py')

TASKS = [
    'even_pairs', 'modular_arithmetic', 'parity_check', 'cycle_navigation',
    'stack_manipulation', 'reverse_string', 'modular_arithmetic_brackets', 'solve_equation',
    'duplicate_string', 'missing_duplicate_string', 'odds_first', 'binary_addition', 'binary_multiplication',
    'compute_sqrt', 'bucket_sort',
]
ENCODINGS = ['none', 'sinusoidal', 'learned', 'rope', 'alibi', 'xl_relative']


def get_config():
  base = sweep.load_config(DEFAULT, 'paper')
  base.num_seeds = 3
  base.train.checkpoint_every = 1000
  base.encoding.positions.update(max_length=2048, resample_at_eval=True)
  return sweep.make(base, {
      'task.name': TASKS,
      'encoding.name': ENCODINGS,
      'encoding.positions.sampler': ['contiguous', 'randomized'],
  })
