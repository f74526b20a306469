"""Per-length evaluation with one compilation per length bucket.

Lengths are grouped in power-of-two buckets (1, 2, 3-4, 5-8, ..., 2^(k-1)+1 - 2^k); every
length of a bucket is padded to the bucket's largest, so evaluating lengths 1..M compiles
about log2(M) + 1 times. Within a bucket, `lax.map` walks the lengths on the device. Each
length draws `batch_size` examples from a fixed key (the same data for every model); the
batch is cut into micro-batches so the attention logits stay within a memory budget.
Dropout is off (the evaluation graph is the model's deterministic view).
"""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.model.readout import layout
from pe_research.positions import PositionSampler
from pe_research.tasks.base import Task
from pe_research.training.metrics import accuracies

# Upper bound on attention-logit elements (B * H * T * T) materialized at once per model.
LOGIT_ELEMENTS_BUDGET = 2**26


def length_buckets(min_length: int, max_length: int) -> list[tuple[int, list[int]]]:
  """[(slot, lengths)] with slot the power of two that bounds each length of the bucket."""
  buckets: dict[int, list[int]] = {}
  for length in range(min_length, max_length + 1):
    buckets.setdefault(1 << (length - 1).bit_length(), []).append(length)
  return sorted(buckets.items())


def micro_batches(batch_size: int, seq_len: int, num_heads: int, budget: int = LOGIT_ELEMENTS_BUDGET) -> int:
  """The smallest divisor n of batch_size with (batch_size / n) * H * T^2 <= budget."""
  for n in range(1, batch_size + 1):
    if batch_size % n == 0 and (batch_size // n) * num_heads * seq_len**2 <= budget:
      return n
  return batch_size


def make_bucket_eval(graphdef, task: Task, sampler: PositionSampler, batch_size: int, num_heads: int, eval_key: jax.Array):
  """evaluate(params, lengths int32[n], slot) -> (token_acc[n], sequence_acc[n]).

  `slot` is static (one compilation per bucket); `lengths` may be any in 1..slot."""

  def evaluate(params, lengths, slot: int):
    model = nnx.merge(graphdef, params)
    seq_len = slot + int(task.output_length(slot))
    chunks = micro_batches(batch_size, seq_len, num_heads)

    def one_length(length):
      key = jax.random.fold_in(eval_key, length)
      batch = task.sample(key, batch_size, length, slot)
      seq = layout(batch, task.input_vocab_size)
      positions = sampler(jax.random.fold_in(key, 1), jnp.sum(seq.valid, -1), seq_len)
      split = lambda x: x.reshape(chunks, batch_size // chunks, *x.shape[1:])  # noqa: E731
      logits = jax.lax.map(
          lambda c: model(*c),
          (split(seq.tokens), split(positions), split(seq.valid), split(seq.answer_index)),
      )
      return accuracies(logits.reshape(batch_size, *logits.shape[2:]), batch.targets, batch.loss_mask)

    return jax.lax.map(one_length, lengths)

  return evaluate


def summarize(per_length: list[dict], train_max_length: int) -> dict:
  """The literature's scores from per-length records: mean token accuracy over the
  training lengths (in distribution) and over the longer, unseen lengths."""
  inside = [r['token_accuracy'] for r in per_length if r['length'] <= train_max_length]
  outside = [r['token_accuracy'] for r in per_length if r['length'] > train_max_length]
  mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
  return {'in_distribution_accuracy': mean(inside), 'unseen_lengths_accuracy': mean(outside)}
