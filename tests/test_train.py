"""The whole pipeline on shrunken configs: learning, compile counts, outputs, seeds."""

import json

import numpy as np
import pytest

from pe_research import evaluation, experiment, io
from tests.conftest import tiny_config


def test_tiny_model_learns_reverse_string(tmp_path):
  config = tiny_config(encoding__name='rope')
  config.train.update(steps=300, steps_per_call=100, learning_rate=3e-3, max_length=5, batch_size=32)
  config.eval.max_length = 8
  summary = experiment.run(config, str(tmp_path))
  assert summary['in_distribution_accuracy'] >= 0.95
  # Training compiles once for all lengths; evaluation once per bucket (1, 2, 4, 8).
  assert summary['compilations'] == {'train': 1, 'eval': 4}


def test_run_writes_config_logs_and_per_length_results(tmp_path):
  config = tiny_config()
  summary = experiment.run(config, str(tmp_path))
  assert json.load(open(tmp_path / 'config.json'))['task']['name'] == 'reverse_string'
  train = io.read_jsonl(tmp_path / 'train.jsonl')
  assert [r['step'] for r in train] == [25, 50]
  assert all({'loss', 'token_accuracy', 'sequence_accuracy', 'steps_per_s', 'tokens_per_s'} <= set(r) for r in train)
  records = io.read_jsonl(tmp_path / 'eval.jsonl')
  assert [r['length'] for r in records] == list(range(1, 11))
  assert [r['in_training_range'] for r in records] == [n <= 6 for n in range(1, 11)]
  for r in records:
    assert 0 <= r['sequence_accuracy'] <= r['token_accuracy'] <= 1
  assert summary['compilations'] == {'train': 1, 'eval': len(evaluation.length_buckets(1, 10))}
  assert json.load(open(tmp_path / 'summary.json'))['unseen_lengths_accuracy'] == pytest.approx(
      np.mean([r['token_accuracy'] for r in records[6:]])
  )


def test_seeds_trained_together_match_seeds_trained_alone(tmp_path):
  experiment.run(tiny_config(num_seeds=2), str(tmp_path / 'both'))
  both = io.read_jsonl(tmp_path / 'both' / 'eval.jsonl')
  experiment.run(tiny_config(seed=1), str(tmp_path / 'alone'))
  alone = io.read_jsonl(tmp_path / 'alone' / 'eval.jsonl')
  second = [r['token_accuracy'] for r in both if r['seed'] == 1]
  np.testing.assert_allclose(second, [r['token_accuracy'] for r in alone], atol=0.02)
  assert [r['token_accuracy'] for r in both if r['seed'] == 0] != second


def test_dropout_is_off_at_evaluation(tmp_path):
  """Evaluation passes no dropout key, so an active Dropout would raise: the evaluation
  graph must be the deterministic view."""
  summary = experiment.run(tiny_config(model__dropout=0.5), str(tmp_path))
  assert 0 <= summary['unseen_lengths_accuracy'] <= 1


def test_length_buckets_are_powers_of_two():
  buckets = evaluation.length_buckets(1, 20)
  assert [slot for slot, _ in buckets] == [1, 2, 4, 8, 16, 32]
  assert buckets[3] == (8, [5, 6, 7, 8])
  assert sum(len(lengths) for _, lengths in buckets) == 20
  assert len(evaluation.length_buckets(1, 500)) == 10


def test_micro_batches_respect_the_memory_budget():
  assert evaluation.micro_batches(128, 1024, 8, budget=2**26) == 16  # 128 * 8 * 1024^2 / 2^26
  assert evaluation.micro_batches(128, 16, 8) == 1
