"""Deletang et al. 2023 (Neural Networks and the Chomsky Hierarchy), Transformer part: the
15 tasks of the benchmark x 7 positional encodings.

    python -m pe_research.sweep --sweep=configs/sweeps/deletang2023.py --workdir=runs/deletang2023

Protocol (configs/default.py:paper): encoder of 5 layers, width 64, 8 heads; batch 128;
training lengths 1..40, every length 41..500 tested; learning rate 1e-4; 3 seeds per cell
trained together. The paper trains 1,000,000 steps and reports the best of several seeds
(the report's max column); here 10,000 steps: raise with --sweep.base.train.steps.

Expected cost: 105 cells. On the 2-core CPU one `:paper` seed (reverse_string, sinusoidal)
trains at about 9 steps/s, and evaluating every length 41..500 with 64 sequences each takes
under 4 minutes (scripts/benchmark.py, README.md); 3 seeds of 10,000 steps and the
evaluation at 128 sequences a length come to roughly 1.5 hours a cell (extrapolated from
those rates), more where attention stays in XLA (t5_bias trains at 6.2 steps/s,
xl_relative at 3.4): about a week in all, a sweep for an accelerator. A first look on
a CPU, about 2.5 minutes a cell (2 min 24 s measured for reverse_string with sinusoidal
positions): --sweep.base.train.steps=1000 --sweep.base.eval.max_length=100
--sweep.base.num_seeds=1.
"""

import os

from pe_research import sweep

DEFAULT = os.path.join(os.path.dirname(__file__), os.pardir, 'default.py')

TASKS = [
    # Regular.
    'even_pairs', 'modular_arithmetic', 'parity_check', 'cycle_navigation',
    # Deterministic context-free.
    'stack_manipulation', 'reverse_string', 'modular_arithmetic_brackets', 'solve_equation',
    # Context-sensitive.
    'duplicate_string', 'missing_duplicate_string', 'odds_first', 'binary_addition', 'binary_multiplication',
    'compute_sqrt', 'bucket_sort',
]
ENCODINGS = ['none', 'sinusoidal', 'learned', 'rope', 'alibi', 't5_bias', 'xl_relative']


def get_config():
  base = sweep.load_config(DEFAULT, 'paper')
  base.num_seeds = 3
  base.train.checkpoint_every = 1000
  return sweep.make(base, {'task.name': TASKS, 'encoding.name': ENCODINGS})
