"""scripts/results_tables.py on a synthetic directory of runs: the contiguous-vs-randomized
table pairs cells by task and encoding, shows a cell not run as '-', and averages the gain
only over complete pairs."""

import os

from pe_research import io
from tests.conftest import load_script
from tests.test_report import make_run


def make_sampler_run(root, encoding, sampler, accuracies):
  run_dir = make_run(root, f'encoding={encoding},sampler={sampler}', encoding, 0, {0: accuracies})
  config = io.read_json(os.path.join(run_dir, 'config.json'))
  config['encoding']['positions'] = {'sampler': sampler}
  io.write_json_atomic(os.path.join(run_dir, 'config.json'), config)


def test_sampler_comparison_pairs_cells_and_averages_complete_pairs(tmp_path):
  root = str(tmp_path)
  make_sampler_run(root, 'rope', 'contiguous', [1.0, 1.0, 0.5, 0.5])
  make_sampler_run(root, 'rope', 'randomized', [1.0, 1.0, 0.9, 0.7])
  make_sampler_run(root, 'alibi', 'contiguous', [1.0, 1.0, 0.6, 0.6])
  table = load_script('results_tables').TABLES['paper_scale'](root)
  assert '| parity_check | rope | 50.0 | 100.0 | 50.0 | 100.0 | 80.0 | +30.0 |' in table
  assert '| parity_check | alibi | 50.0 | 100.0 | 60.0 | - | - | - |' in table
  assert '+30.0 points over 1 task x encoding pairs; +30.0 points over the 1 pairs' in table
