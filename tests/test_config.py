"""Every config error is caught before anything compiles, naming the field and the value."""

import subprocess
import sys

import pytest

from pe_research.validation import validate
from tests.conftest import ROOT, default, tiny_config


@pytest.mark.parametrize('overrides, message', [
    ({'task__name': 'reverse'}, r"config.task.name='reverse' is unknown; allowed: .*reverse_string"),
    ({'encoding__name': 'rotary'}, r"config.encoding.name='rotary' is unknown; allowed: .*rope"),
    ({'model__num_heads': 3}, r'config.model.num_heads=3 does not divide config.model.model_dim=32'),
    ({'model__model_dim': 31, 'model__num_heads': 1}, r'config.model.model_dim=31 is odd'),
    ({'model__model_dim': 31, 'model__num_heads': 1, 'encoding__name': 'sinusoidal_concat'}, r'model_dim=31 is odd'),
    ({'model__model_dim': 36, 'model__num_heads': 4, 'encoding__name': 'rope'}, r'head width .* = 9 is odd'),
    ({'encoding__name': 'learned', 'encoding__learned__max_length': 12},
     r'config.encoding.learned.max_length=12 .* allowed: >= 16'),
    ({'model__num_layers': 0}, r'config.model.num_layers=0 must be positive'),
    ({'model__model_dim': -4}, r'config.model.model_dim=-4 must be positive'),
    ({'train__steps': 0}, r'config.train.steps=0 must be positive'),
    ({'train__batch_size': -1}, r'config.train.batch_size=-1 must be positive'),
    ({'train__learning_rate': 0.0}, r'config.train.learning_rate=0.0 must be positive'),
    ({'eval__max_length': 0}, r'config.eval.max_length=0 must be positive'),
    ({'train__steps': 60}, r'config.train.steps=60 must be a multiple of config.train.steps_per_call=25'),
    ({'train__min_length': 9}, r'config.train.min_length=9 exceeds config.train.max_length=6'),
    ({'model__norm': 'middle'}, r"config.model.norm='middle' is unknown"),
    ({'model__dropout': 1.0}, r'config.model.dropout=1.0 must be in \[0, 1\)'),
    ({'model__matmul_dtype': 'float16'}, r"config.model.matmul_dtype='float16' is unknown; allowed: bfloat16, float32"),
    ({'encoding__positions__sampler': 'shuffled'}, r"config.encoding.positions.sampler='shuffled' is unknown"),
    ({'train__length_parts': 0}, r'config.train.length_parts=0 must be positive'),
    ({'train__vmap_seeds': -1}, r'config.train.vmap_seeds=-1 must be >= 0'),
    ({'eval__logit_budget': -1}, r'config.eval.logit_budget=-1 must be >= 0'),
    ({'train__shard': 'heads'}, r"config.train.shard='heads' is unknown; allowed: batch, seeds"),
])
def test_bad_config_is_one_clear_error(overrides, message):
  with pytest.raises(ValueError, match=message):
    validate(tiny_config(**overrides))


def test_the_default_and_paper_configs_are_valid():
  assert validate(default.get_config()).name == 'reverse_string'
  paper = default.get_config('paper,encoding=rope,task=duplicate_string')
  assert validate(paper).name == 'duplicate_string'
  assert (paper.model.num_layers, paper.model.model_dim, paper.model.num_heads, paper.model.mlp_ratio) == (5, 64, 8, 4)
  assert (paper.train.batch_size, paper.train.max_length, paper.eval.max_length) == (128, 40, 500)


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="unknown config variant 'huge'"):
    default.get_config('huge')


def test_main_prints_one_line_and_no_traceback():
  result = subprocess.run(
      [sys.executable, '-m', 'pe_research.main', '--config=configs/default.py', '--workdir=/tmp/unused',
       '--config.model.num_heads=5'],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
  )
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert 'config error: config.model.num_heads=5 does not divide config.model.model_dim=64' in result.stderr
