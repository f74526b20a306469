"""The whole pipeline on shrunken configs: learning, compile counts, outputs, seeds."""

import collections
import fractions
import json
import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research import evaluation, experiment, io
from pe_research.encodings import ENCODINGS
from pe_research.model import kernels
from pe_research.tasks import get_task
from pe_research.training import sharding, train_step
from tests.conftest import tiny_config


def test_tiny_model_learns_reverse_string(tmp_path):
  config = tiny_config(encoding__name='rope')
  config.train.update(steps=300, steps_per_call=100, learning_rate=3e-3, max_length=5, batch_size=32)
  config.eval.max_length = 8
  summary = experiment.run(config, str(tmp_path))
  assert summary['in_distribution_accuracy'] >= 0.95
  # Training compiles once for all lengths; evaluation once per bucket (here one: 1..8).
  assert summary['compilations'] == {'train': 1, 'eval': 1}


def test_randomized_positions_are_scored_as_trained_by_default(tmp_path):
  # Trained on random positions in [0, 64), evaluated with the default settings: random
  # positions again (Ruoss et al.), so in distribution it scores what it reached in
  # training, far above the position-blind ceiling of the same examples.
  config = tiny_config(encoding__name='rope', encoding__positions__sampler='randomized',
                       encoding__positions__max_length=64, model__num_layers=2)
  config.train.update(steps=600, steps_per_call=100, learning_rate=3e-3, max_length=8, batch_size=32)
  config.eval.max_length = 12
  summary = experiment.run(config, str(tmp_path))
  trained = io.read_jsonl(tmp_path / 'train.jsonl')[-1]['token_accuracy']  # Mean of the last 100 steps.
  assert trained >= 0.8 and summary['in_distribution_accuracy'] >= trained - 0.05
  assert summary['eval_positions'] == 'random' and not summary['position_blind']
  ceiling = evaluation.summarize(io.read_jsonl(tmp_path / 'eval.jsonl'), 8, 'position_blind_ceiling')
  assert summary['in_distribution_accuracy'] >= ceiling['in_distribution_accuracy'] + 0.1


def test_a_bidirectional_model_without_positions_reports_its_ceiling(tmp_path):
  config = tiny_config(encoding__name='none')
  summary = experiment.run(config, str(tmp_path))
  records = io.read_jsonl(tmp_path / 'eval.jsonl')
  # reverse_string of length n: the answer is the input reversed, the best constant answer
  # its majority bit; in the pooled token accuracy sum max(#0, #1) / sum n.
  task = get_task('reverse_string')
  key = jax.random.fold_in(jax.random.key(config.eval.seed), 7)
  batch = task.sample(key, config.eval.batch_size, 7, 8)
  inputs = np.asarray(batch.inputs)[:, :7]
  expected = np.sum(np.maximum(inputs.sum(1), 7 - inputs.sum(1))) / inputs.size
  assert next(r for r in records if r['length'] == 7)['position_blind_ceiling'] == pytest.approx(expected)
  assert summary['position_blind'] and summary['position_blind_ceiling']['unseen_lengths_accuracy'] < 0.8
  # No model of this kind beats it (a little float slack).
  assert all(r['token_accuracy'] <= r['position_blind_ceiling'] + 1e-6 for r in records)
  assert not experiment.run(tiny_config(encoding__name='none', model__causal=True), str(tmp_path / 'causal'))[
      'position_blind']


def test_run_writes_config_logs_and_per_length_results(tmp_path):
  config = tiny_config(eval__max_length=10)  # Two evaluation buckets: each compiles once.
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


@pytest.fixture(scope='module')
def seeds_trained_alone(tmp_path_factory):
  """{seed: params} of seeds 1 and 2 of tiny_config, each trained on its own."""
  workdir = tmp_path_factory.mktemp('alone')
  return {seed: experiment.train(tiny_config(seed=seed), get_task('reverse_string'), str(workdir / str(seed)),
                                 collections.Counter())[0] for seed in (1, 2)}


@pytest.mark.parametrize('vmap_seeds', [3, 2, 1])  # all vmapped, 2 vmapped then 1, a loop
def test_seeds_trained_together_match_seeds_trained_alone(tmp_path, vmap_seeds, seeds_trained_alone):
  """Seeds 1 and 2 of a 3-seed ensemble (one compiled call) end with the parameters of
  each seed trained alone."""
  config = tiny_config(num_seeds=3, train__vmap_seeds=vmap_seeds)
  ensemble = experiment.train(config, get_task('reverse_string'), str(tmp_path), collections.Counter()).params
  for seed, alone in seeds_trained_alone.items():
    for together, single in zip(jax.tree.leaves(ensemble), jax.tree.leaves(alone)):
      np.testing.assert_allclose(together[seed], single[0], rtol=1e-4, atol=1e-5)
  assert not np.allclose(jax.tree.leaves(ensemble)[0][0], jax.tree.leaves(ensemble)[0][1])


def test_one_seed_at_a_time_maps_without_a_vmap():
  """Width 1 loops over the seeds on unbatched values: no size-1 seed axis in the body."""
  seeds_4x3 = jnp.ones((4, 3))
  assert 'f32[1,3]' not in str(jax.make_jaxpr(sharding.over_seeds(lambda x: x * 2, 1))(seeds_4x3))
  assert 'f32[2,3]' in str(jax.make_jaxpr(sharding.over_seeds(lambda x: x * 2, 2))(seeds_4x3))


def test_seeds_vectorized():
  assert sharding.seeds_vectorized(tiny_config(num_seeds=8)) == 8
  assert sharding.seeds_vectorized(tiny_config(num_seeds=8, train__vmap_seeds=4)) == 4
  assert sharding.seeds_vectorized(tiny_config(num_seeds=2, train__vmap_seeds=4)) == 2


def test_length_parts_keep_lengths_exactly_uniform():
  """A random example of a batch cut into parts has a length uniform on min..max: part j
  holds examples/B of the batch with u uniform on [start, stop), length min + floor(u)."""
  for low, high, batch, count in [(1, 40, 128, 4), (1, 6, 16, 4), (3, 10, 10, 3), (1, 5, 3, 8), (2, 2, 8, 4)]:
    parts = train_step.length_parts(low, high, batch, count)
    assert sum(p.examples for p in parts) == batch
    assert parts[0].start == 0 and parts[-1].stop == high - low + 1 and parts[-1].slot == high
    probability = collections.defaultdict(fractions.Fraction)
    for part in parts:
      start, stop = (fractions.Fraction(x).limit_denominator(batch) for x in (part.start, part.stop))
      for length in range(low, part.slot + 1):
        overlap = max(0, min(stop, length - low + 1) - max(start, length - low))
        probability[length] += fractions.Fraction(part.examples, batch) * overlap / (stop - start)
      assert part.slot == low + math.ceil(part.stop) - 1
    assert dict(probability) == {n: fractions.Fraction(1, high - low + 1) for n in range(low, high + 1)}
  assert [p.slot for p in train_step.length_parts(1, 40, 128, 4)] == [10, 20, 30, 40]


def test_sampled_part_lengths_are_uniform():
  """Lengths drawn by the 4 parts of a batch of 64 over 1..8, 300 batches: each length is
  drawn 1/8 of the time (2400 expected, std 46)."""
  parts = train_step.length_parts(1, 8, 64, 4)
  draw = jax.jit(jax.vmap(lambda key: jnp.concatenate([
      train_step.part_lengths(k, part, 1) for k, part in zip(jax.random.split(key, len(parts)), parts)])))
  lengths = np.asarray(draw(jax.random.split(jax.random.key(0), 300)))
  counts = np.bincount(lengths.ravel(), minlength=9)
  assert counts[0] == 0 and counts.sum() == 300 * 64
  assert np.all(np.abs(counts[1:] - 2400) < 200), counts
  # Part j draws only its own lengths: 1-2, 3-4, 5-6, 7-8.
  assert [(lengths[:, 16 * j:16 * j + 16].min(), lengths[:, 16 * j:16 * j + 16].max()) for j in range(4)] == [
      (1, 2), (3, 4), (5, 6), (7, 8)]


def test_tokens_metric_counts_the_real_tokens():
  """One step's `tokens` equals input plus answer tokens of the lengths it sampled."""
  config = tiny_config(train__max_length=8, train__length_parts=2)
  task = get_task('reverse_string')
  sampled = []

  class Spy(type(task)):
    def sample(self, key, batch, lengths, max_length):
      sampled.append(lengths)
      return super().sample(key, batch, lengths, max_length)

  training = train_step.training_from_config(config, Spy())

  def step(state, key):
    _, metrics = training.step(state, key)
    return metrics['tokens'], list(sampled)  # The lengths traced in this step.

  tokens, lengths = jax.jit(step)(training.init(jax.random.key(0)), jax.random.key(1))
  assert len(lengths) == config.train.length_parts
  assert float(tokens) == 2 * sum(int(np.sum(x)) for x in lengths)  # reverse_string: 2 per input token.


def test_dropout_is_off_at_evaluation(tmp_path):
  """Evaluation passes no dropout key, so an active Dropout would raise: the evaluation
  graph must be the deterministic view."""
  summary = experiment.run(tiny_config(model__dropout=0.5), str(tmp_path))
  assert 0 <= summary['unseen_lengths_accuracy'] <= 1


def test_evaluation_buckets_grow_geometrically():
  buckets = evaluation.length_buckets(1, 20)
  assert [slot for slot, _ in buckets] == [8, 16, 20]
  assert buckets[2] == (20, [17, 18, 19, 20])
  assert evaluation.bucket_slots(500) == [8, 16, 24, 32, 40, 56, 72, 96, 120, 152, 192, 240, 304, 384, 480, 500]
  protocol = evaluation.length_buckets(41, 500)  # Deletang et al.'s test lengths.
  assert len(protocol) == 11 and [n for _, lengths in protocol for n in lengths] == list(range(41, 501))
  assert all(slot <= 1.4 * lengths[0] for slot, lengths in protocol)  # Padding stays small.


def test_attention_blocks_respect_the_memory_budget():
  assert evaluation.attention_blocks(128, 1024, 8, budget=2**26) == (16, None)  # 128 * 8 * 1024^2 / 2^26
  assert evaluation.attention_blocks(128, 16, 8, budget=2**23) == (1, None)
  # One 16k-token sequence is over budget: queries go 2^26 / (8 * 16384) = 512 at a time.
  assert evaluation.attention_blocks(4, 16384, 8, budget=2**26) == (4, 512)


def test_logit_budget_is_the_configured_one_or_the_platform_default():
  assert evaluation.logit_budget(2**20) == 2**20
  platform = jax.default_backend()
  expected = evaluation.LOGIT_ELEMENTS_BUDGET.get(platform, evaluation.ACCELERATOR_LOGIT_ELEMENTS_BUDGET)
  assert evaluation.logit_budget(0) == expected
  assert evaluation.logit_budget(0) == 2**22 or platform != 'cpu'
  assert evaluation.logit_budget(0, fused=True) == evaluation.FUSED_CPU_LOGIT_ELEMENTS_BUDGET
  assert evaluation.logit_budget(2**20, fused=True) == 2**20


def _evaluation_model(config):
  """The model of `config` as the evaluation builds it (its deterministic view)."""
  return nnx.view(train_step.model_from_config(config, get_task(config.task.name), nnx.Rngs(0)), deterministic=True)


def test_evaluation_uses_the_fused_budget_where_attention_runs_fused():
  budget = lambda name: evaluation.model_logit_budget(_evaluation_model(tiny_config(encoding__name=name)))  # noqa: E731
  fused = jax.default_backend() == 'cpu' and kernels.available()
  assert budget('t5_bias') == evaluation.logit_budget(0)
  assert budget('sinusoidal') == evaluation.logit_budget(0, fused=fused)
  assert budget('alibi') == evaluation.logit_budget(0, fused=fused)  # Its bias is computed in the kernel.


@pytest.mark.parametrize('name', sorted(ENCODINGS))
def test_evaluation_of_16k_tokens_stays_under_2_gb(name):
  """The :paper model's layer (width 64, 8 heads) on one 16,384-token sequence, as the
  evaluation runs it (`forward_in_blocks`, the platform's default budget): XLA's buffers
  (temporaries, arguments, outputs) stay under 2 GiB for every encoding; its full logits
  alone would take 8 GiB."""
  length = 16_384
  config = tiny_config(encoding__name=name, model__model_dim=64, model__num_heads=8,
                       model__causal=ENCODINGS[name].causal_only, encoding__learned__max_length=length)
  model = _evaluation_model(config)
  graphdef, params = nnx.split(model)
  inputs = [jax.ShapeDtypeStruct((1, length), dtype) for dtype in (jnp.int32, jnp.int32, bool)]
  budget = evaluation.model_logit_budget(model)  # As the evaluation runs it.
  forward = jax.jit(lambda p, *args: evaluation.forward_in_blocks(nnx.merge(graphdef, p), *args, num_heads=8,
                                                                        budget=budget))
  compiled = forward.lower(params, *inputs, jax.ShapeDtypeStruct((1, 1), jnp.int32)).compile()
  memory = compiled.memory_analysis()
  used = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
  assert used < 2**31, f'{name}: {used / 2**20:.0f} MiB'
