"""Per-length evaluation with one compilation per length bucket.

Lengths are grouped in buckets whose tops (slots) grow geometrically: multiples of 8, each
at least 1.25x the one before (8, 16, 24, 32, 40, 56, 72, 96, 120, 152, 192, 240, 304, 384,
480, ...), the last capped at the longest length. Every length of a bucket is padded to its
slot, so padding wastes at most a quarter of a bucket's compute, and the lengths 41..500 of
the usual protocol take 11 compilations. Within a bucket, `lax.map` walks the lengths on
the device. Each length draws `batch_size` examples from a fixed key (the same data for
every model). Memory stays bounded at any length: the batch is cut into micro-batches, and
when even one sequence's attention logits exceed the budget, attention runs blockwise over
the queries (`MultiHeadAttention(query_block=...)`). Dropout is off (the evaluation graph is
the model's deterministic view).
"""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.model.attention import materializes_logits
from pe_research.model.readout import layout
from pe_research.positions import PositionSampler
from pe_research.tasks.base import Task
from pe_research.training.metrics import accuracies, position_blind_ceiling

# Upper bound on attention-logit elements (B * H * T * S) materialized at once per model,
# per platform (`config.eval.logit_budget` overrides it). Besides bounding memory it sets
# the working set, and on a CPU 2^22 (16 MiB a layer) was the fastest of 2^21..2^24; an
# accelerator wants fewer, larger blocks (docs/performance.md, "Evaluation").
LOGIT_ELEMENTS_BUDGET = {'cpu': 2**22}
ACCELERATOR_LOGIT_ELEMENTS_BUDGET = 2**26
# Where attention runs in the fused CPU kernel (`attention.materializes_logits`) no logits are
# materialized and the budget only sizes the micro-batches and query blocks: fewer, larger
# calls were faster there (docs/performance.md).
FUSED_CPU_LOGIT_ELEMENTS_BUDGET = 2**24
# Bucket slots are multiples of SLOT_STEP, each at least SLOT_GROWTH times the one before.
SLOT_STEP = 8
SLOT_GROWTH = 1.25


def bucket_slots(max_length: int) -> list[int]:
  """The increasing slots up to max_length (see the module docstring)."""
  slots = [min(SLOT_STEP, max_length)]
  while slots[-1] < max_length:
    grown = max(slots[-1] * SLOT_GROWTH, slots[-1] + 1)
    slots.append(min(-(-int(math.ceil(grown)) // SLOT_STEP) * SLOT_STEP, max_length))
  return slots


def length_buckets(min_length: int, max_length: int) -> list[tuple[int, list[int]]]:
  """[(slot, lengths)]: min_length..max_length grouped under the smallest slot >= each."""
  buckets: dict[int, list[int]] = {}
  slots = bucket_slots(max_length)
  for length in range(min_length, max_length + 1):
    buckets.setdefault(next(s for s in slots if s >= length), []).append(length)
  return sorted(buckets.items())


def logit_budget(configured: int = 0, fused: bool = False) -> int:
  """`configured` if positive, else the default budget of JAX's default platform, or
  FUSED_CPU_LOGIT_ELEMENTS_BUDGET where `fused` (attention runs in the fused CPU kernel)."""
  if fused:
    return configured or FUSED_CPU_LOGIT_ELEMENTS_BUDGET
  return configured or LOGIT_ELEMENTS_BUDGET.get(jax.default_backend(), ACCELERATOR_LOGIT_ELEMENTS_BUDGET)


def model_logit_budget(model, configured: int = 0) -> int:
  """`logit_budget` for `model`: the fused budget where none of its attention layers forms
  logits (`attention.materializes_logits`, decided from what its encodings add)."""
  return logit_budget(configured, fused=not materializes_logits(model))


def attention_blocks(batch_size: int, seq_len: int, num_heads: int, budget: int):
  """(micro-batches n, query block or None): the smallest divisor n of batch_size with
  (batch_size / n) * H * T^2 <= budget; if one sequence is already over it, n = batch_size
  and queries go in blocks of the largest power of two q with H * q * T <= budget."""
  for n in range(1, batch_size + 1):
    if batch_size % n == 0 and (batch_size // n) * num_heads * seq_len**2 <= budget:
      return n, None
  return batch_size, 1 << max(0, (budget // (num_heads * seq_len)).bit_length() - 1)


def forward_in_blocks(model, tokens, positions, valid, answer_index, num_heads: int, budget: int) -> jax.Array:
  """model(tokens, positions, valid, answer_index) [B, ...] within the logit budget: the
  batch goes in micro-batches (`lax.map`), attention in query blocks if one sequence is
  over it (`attention_blocks`)."""
  batch_size, seq_len = tokens.shape
  chunks, query_block = attention_blocks(batch_size, seq_len, num_heads, budget)
  split = lambda x: x.reshape(chunks, batch_size // chunks, *x.shape[1:])  # noqa: E731
  logits = jax.lax.map(lambda c: model(*c, query_block=query_block),
                       (split(tokens), split(positions), split(valid), split(answer_index)))
  return logits.reshape(batch_size, *logits.shape[2:])


def make_bucket_eval(graphdef, task: Task, sampler: PositionSampler, batch_size: int, num_heads: int,
                     eval_key: jax.Array, configured_budget: int = 0):
  """evaluate(params, lengths int32[n], slot) -> (token_acc[n], sequence_acc[n], ceiling[n]),
  `ceiling` the position-blind ceiling of the same examples (`metrics.position_blind_ceiling`).
  Its logit budget is `configured_budget`, or the model's default (`model_logit_budget`).

  `slot` is static (one compilation per bucket); `lengths` may be any in 1..slot."""

  def evaluate(params, lengths, slot: int):
    model = nnx.merge(graphdef, params)
    budget = model_logit_budget(model, configured_budget)
    seq_len = slot + int(task.output_length(slot))

    def one_length(length):
      key = jax.random.fold_in(eval_key, length)
      batch = task.sample(key, batch_size, length, slot)
      seq = layout(batch, task.input_vocab_size)
      positions = sampler(jax.random.fold_in(key, 1), jnp.sum(seq.valid, -1), seq_len)
      logits = forward_in_blocks(model, seq.tokens, positions, seq.valid, seq.answer_index, num_heads, budget)
      ceiling = position_blind_ceiling(batch.targets, batch.loss_mask, task.output_vocab_size)
      return (*accuracies(logits, batch.targets, batch.loss_mask), ceiling)

    return jax.lax.map(one_length, lengths)

  return evaluate


def summarize(per_length: list[dict], train_max_length: int, field: str = 'token_accuracy') -> dict:
  """The literature's scores from per-length records: the mean of `field` (token accuracy)
  over the training lengths (in distribution) and over the longer, unseen lengths (NaN
  where there are none, written as null)."""
  scored = [r for r in per_length if 'length' in r]  # Not the lines of diverged seeds.
  inside = [r[field] for r in scored if r['length'] <= train_max_length]
  outside = [r[field] for r in scored if r['length'] > train_max_length]
  mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
  return {'in_distribution_accuracy': mean(inside), 'unseen_lengths_accuracy': mean(outside)}
