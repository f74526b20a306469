"""Deletang et al. 2023 (Neural Networks and the Chomsky Hierarchy, arXiv 2207.02098),
Transformer part: which of the 15 tasks a Transformer solves beyond its training lengths.

    python -m pe_research.sweep --sweep=configs/sweeps/deletang2023.py --workdir=runs/deletang2023
    python -m pe_research.sweep --sweep=configs/sweeps/deletang2023.py:full --workdir=runs/deletang2023_full

Default, sized for a 2-core CPU: the default model (2 layers, width 64, 4 heads), lengths
1..16, every length up to 64 tested (64 sequences each); 5,000 steps of batch 32 at 1e-3
with a cosine decay; 2 seeds per cell; the 15 tasks x the 5 encodings of their sweep
(none, sinusoidal, xl_relative for their "relative", alibi, rope). 75 cells. Their
Transformer column is the best encoding and the best seed (the report's max column) after
1,000,000 steps at lengths 1..40, tested 41..500.

`:full` is their protocol at their scale (configs/default.py:paper: 5 layers, width 64, 8
heads, batch 128, lengths 1..40 tested 41..500; 10 seeds, the constant rates 1e-4, 3e-4 and
5e-4, 1,000,000 steps): 225 cells of 10 seeds, for accelerators
(`--launcher=ray` or `--launcher=slurm`; `--dry_run` first gives its cost on the machine).

Expected (the default, run in full; docs/results.md has the table and the verdicts that
scripts/results_tables.py computes): no task solved beyond training (90% or more);
modular_arithmetic, modular_arithmetic_brackets, solve_equation and binary_multiplication
underfit with every encoding. Cost: a median of 152 s a cell on the 2-core CPU (AMD EPYC),
5.0 hours of recorded cell time for the 75 cells (two processes, one pinned to each core).
"""

import os

from pe_research import sweep

DEFAULT = os.path.join(os.path.dirname(__file__), os.pardir, 'default.py')

# Their learning-rate sweep (constant Adam rates), as their first author gives it on the
# code's issue tracker (google-deepmind/neural_networks_chomsky_hierarchy, issues 2 and 7).
LEARNING_RATES = [1e-4, 3e-4, 5e-4]
TASKS = [
    # Regular.
    'even_pairs', 'modular_arithmetic', 'parity_check', 'cycle_navigation',
    # Deterministic context-free.
    'stack_manipulation', 'reverse_string', 'modular_arithmetic_brackets', 'solve_equation',
    # Context-sensitive.
    'duplicate_string', 'missing_duplicate_string', 'odds_first', 'binary_addition', 'binary_multiplication',
    'compute_sqrt', 'bucket_sort',
]
# Their sweep: NONE, SIN_COS, RELATIVE, ALIBI, ROTARY (neural_networks_chomsky_hierarchy issue #7).
ENCODINGS = ['none', 'sinusoidal', 'xl_relative', 'alibi', 'rope']


def get_config(variant: str = ''):
  if variant == 'full':
    base = sweep.load_config(DEFAULT, 'paper')
    base.num_seeds = 10
    base.train.update(steps=1_000_000, schedule='constant', checkpoint_every=10_000)
    return sweep.make(base, {'task.name': TASKS, 'encoding.name': ENCODINGS, 'train.learning_rate': LEARNING_RATES})
  if variant:
    raise ValueError(f"unknown variant {variant!r}; allowed: '' (CPU-sized) or 'full'")
  base = sweep.load_config(DEFAULT)
  base.num_seeds = 2
  base.train.update(steps=5000, schedule='cosine', checkpoint_every=2500)
  return sweep.make(base, {'task.name': TASKS, 'encoding.name': ENCODINGS})
