"""The findings at the published size: the `:paper` model of Deletang et al. 2023 and
Ruoss et al. 2023 (5 layers, width 64, 8 heads, batch 128, lengths 1..40, tested up to
500) with contiguous and randomized positions.

    python -m pe_research.sweep --sweep=configs/sweeps/paper_scale.py --workdir=runs/paper_scale

Protocol: configs/default.py:paper, trained 4,000 steps at 3e-4 (the middle of Deletang et
al.'s sweep 1e-4, 3e-4, 5e-4) with a cosine decay instead of their 1,000,000 constant
steps; one seed per cell; every length 41..500 tested with 32 sequences each (they use
512); randomized positions from [0, 2048), drawn again at evaluation. Tasks:
reverse_string, duplicate_string; encodings: sinusoidal, rope, alibi. 12 cells.

Expected (docs/results.md, from this sweep's run, with the verdicts that
scripts/results_tables.py computes): contiguous cells near chance beyond length 40, and
randomized cells higher, but no randomized cell learns its training lengths in 4,000 steps,
so no pair is comparable with the paper's finding yet. Cost: about 27 minutes a
reverse_string cell and 45 a duplicate_string cell on one core of the 2-core Intel Xeon,
7.5 hours of recorded cell time in all (about 3.8 hours as two processes pinned to one
core each).
"""

import os

from pe_research import sweep

DEFAULT = os.path.join(os.path.dirname(__file__), os.pardir, 'default.py')


def get_config():
  base = sweep.load_config(DEFAULT, 'paper')
  base.train.update(steps=4000, learning_rate=3e-4, schedule='cosine', checkpoint_every=1000)
  base.eval.batch_size = 32
  base.encoding.positions.max_length = 2048
  return sweep.make(base, {
      'task.name': ['reverse_string', 'duplicate_string'],
      'encoding.name': ['sinusoidal', 'rope', 'alibi'],
      'encoding.positions.sampler': ['contiguous', 'randomized'],
  })
