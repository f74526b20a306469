"""Default experiment: a small Transformer learns `reverse_string` on lengths 1..16 and is
tested on every length up to 64.

    python -m pe_research.main --config=configs/default.py --workdir=runs/demo

Variants by suffix, comma-separated (`name=value` sets config.<name>.name):
    --config=configs/default.py:encoding=rope,task=duplicate_string
    --config=configs/default.py:paper          # Deletang et al. 2023 protocol
and any field from the command line: --config.train.steps=2000.
Expected: about 25 seconds on a 2-core CPU, in-distribution accuracy near 1 and unseen
lengths near chance (sinusoidal positions do not extrapolate; docs/results.md).
"""

import ml_collections

from pe_research import encodings


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # First random seed; seeds seed .. seed + num_seeds - 1 train together (train.vmap_seeds).
  config.seed = 0
  # Number of models trained at once, one per seed.
  config.num_seeds = 1

  config.task = ml_collections.ConfigDict()
  # Task name, see `python -m pe_research.tasks`.
  config.task.name = 'reverse_string'

  config.model = ml_collections.ConfigDict()
  # Number of attention + MLP blocks.
  config.model.num_layers = 2
  # Model width D.
  config.model.model_dim = 64
  # Attention heads; must divide model_dim.
  config.model.num_heads = 4
  # MLP hidden width = mlp_ratio * model_dim.
  config.model.mlp_ratio = 4
  # Causal (decoder-style) or bidirectional attention.
  config.model.causal = False
  # LayerNorm placement: 'pre' or 'post'.
  config.model.norm = 'pre'
  # Residual dropout rate, off at evaluation.
  config.model.dropout = 0.0
  # Operands of the projection, MLP and readout products: 'float32', or 'bfloat16' for mixed
  # precision (float32 sums, parameters, LayerNorm, softmax and positions; faster on CPUs
  # with bfloat16 matrix units, docs/performance.md). float32: every tolerance and table is.
  config.model.matmul_dtype = 'float32'
  # Scaling of the attention logits: 'sqrt_dk' (q.k / sqrt(d_head), Vaswani et al. 2017:
  # unit-variance logits at any head width; what the literature we reproduce uses, and the
  # fused CPU kernel runs it), 'none', or 'log_length' (Scalable-Softmax, Nakanishi 2025:
  # also times s log n, n the keys a query sees, s learned per head; a length-generalization
  # method). See pe_research/model/attention.py (LogitScale).
  config.model.attention_scale = 'sqrt_dk'

  config.encoding = ml_collections.ConfigDict()
  # Positional encoding name, see pe_research.encodings.ENCODINGS.
  config.encoding.name = 'sinusoidal'
  config.encoding.positions = ml_collections.ConfigDict()
  # How positions are drawn: 'contiguous' (0..T-1), 'randomized' (a sorted random subset
  # of [0, max_length) per example; Ruoss et al. 2023) or 'random_continuous' (sorted
  # uniform floats in [0, max_length)); see pe_research.positions.
  config.encoding.positions.sampler = 'contiguous'
  # L_max of the random samplers; must be >= the longest sequence (input plus answer slots).
  # 2048: Ruoss et al.'s `noise_max_length` (their experiments/example.py), for tests up to
  # length 500; a few times the longest evaluated sequence is the idea.
  config.encoding.positions.max_length = 2048
  # With a random sampler, draw fresh random positions at evaluation too (True), as Ruoss et
  # al. do: their model samples the ordered subset in the same code path at training and at
  # test time (models/transformer.py of google-deepmind/randomized_positional_encodings),
  # and the authors confirm "we also randomize at test time" (issue #1 there). False
  # evaluates on 0..T-1, dense positions such a model never saw together, and scores it far
  # below its training accuracy (docs/results.md); runs that do it say so in their log and
  # summary.
  config.encoding.positions.resample_at_eval = True
  # Each encoding's options, config.encoding.<section>.<option> (and Abacus's, encoding.abacus),
  # declared with their defaults and reasons next to the encoding's code (pe_research/encodings/).
  config.encoding.update(encodings.default_config())

  config.train = ml_collections.ConfigDict()
  # Optimizer steps.
  config.train.steps = 2000
  # Steps fused into one compiled call (lax.scan); steps must be a multiple of it.
  config.train.steps_per_call = 100
  # Examples per step.
  config.train.batch_size = 32
  # Training input lengths are drawn uniformly from min_length .. max_length
  # (min_length is raised to the task's minimum length if below it).
  config.train.min_length = 1
  config.train.max_length = 16
  # Each batch is cut into this many parts, each covering a stretch of lengths and padded
  # only to its longest, so a step costs what its lengths need (1: pad the whole batch to
  # max_length). Each example's length stays uniform on min_length .. max_length.
  # (Evaluation's length buckets are another thing: pe_research.evaluation.) On a GPU, where
  # each part costs kernel launches, 2 trains faster (docs/performance.md).
  config.train.length_parts = 4
  # Adam learning rate, reached after the warmup. 1e-3 is what Ruoss et al.'s example script
  # trains with (experiments/example.py); :paper uses 1e-4, the lowest of Deletang et al.'s
  # sweep (1e-4, 3e-4, 5e-4).
  config.train.learning_rate = 1e-3
  # After the warmup: 'constant' (Deletang et al. 2023 and Ruoss et al. 2023 train with a
  # fixed Adam rate, `optax.adam(learning_rate)` in their experiments/training.py; it also
  # lets a finished run be continued to more steps exactly) or 'cosine' (decay to 10% at
  # train.steps).
  config.train.schedule = 'constant'
  # Linear warmup steps from 0 to learning_rate. Their code has none; 100 short steps keep the
  # first Adam updates of the default model at 1e-3 from overshooting (:paper sets 0).
  config.train.warmup_steps = 100
  # Global-norm gradient clipping threshold (Deletang et al.'s max_grad_norm: 1.0).
  config.train.grad_clip = 1.0
  # Save a checkpoint after the compiled call that reaches each multiple of this many steps,
  # and at the end (0: only at the end); rerunning the same command resumes from the latest.
  config.train.checkpoint_every = 500
  # With several devices: 'seeds' splits the seeds over them, 'batch' splits each batch
  # (data parallel); see pe_research.training.sharding. No effect on one device.
  config.train.shard = 'seeds'
  # Seeds vectorized together (jax.vmap) per compiled call; groups of that many run one
  # after another in the same call. 0: all. On a CPU, 1 is faster for models as large as
  # :paper's; see pe_research.training.sharding.
  config.train.vmap_seeds = 0

  config.eval = ml_collections.ConfigDict()
  # Every length from the task's minimum to max_length is evaluated.
  config.eval.max_length = 64
  # Examples per length, drawn from a fixed key (the same for every model).
  config.eval.batch_size = 64
  # Seed of the fixed evaluation key.
  config.eval.seed = 12345
  # Attention logits (batch x heads x queries x keys) materialized at once, which bounds
  # evaluation memory: larger batches go in micro-batches, longer sequences in query blocks.
  # 0: the platform's default (pe_research.evaluation.logit_budget; on a CPU it is larger
  # where attention runs fused and materializes none).
  config.eval.logit_budget = 0

  for item in filter(None, variant.split(',')):
    if item == 'paper':
      _deletang_protocol(config)
    elif '=' in item:
      section, value = item.split('=', 1)
      if section not in ('task', 'encoding'):
        raise ValueError(f'config variant {item!r}: only task=NAME and encoding=NAME can be set by suffix')
      config[section].name = value
    else:
      raise ValueError(f"unknown config variant {item!r}; allowed: 'paper', 'task=NAME', 'encoding=NAME'")
  return config


def _deletang_protocol(config: ml_collections.ConfigDict) -> None:
  """Deletang et al. 2023, as their code runs it (the hyperparameters a co-author gave in
  google-deepmind/neural_networks_chomsky_hierarchy issue #7, and experiments/training.py):
  encoder of 5 layers, width 64, 8 heads, MLP x4; batch 128; lengths 1..40 uniform; every
  length 41..500 tested; Adam at a constant 1e-4 (the lowest rate of their sweep 1e-4,
  3e-4, 5e-4) after global-norm clipping at 1, no warmup.

  Differs from it, on purpose: 10,000 steps instead of 1,000,000 (set train.steps); the
  block is pre-LayerNorm with GELU and no dropout, where theirs is post-LayerNorm with ReLU
  and dropout 0.1 (model.norm='post', model.dropout=0.1 follow it; the activation has no
  option); answers are read at placeholder slots, as in theirs."""
  config.model.update(num_layers=5, model_dim=64, num_heads=8, mlp_ratio=4)
  # 8 length parts of 16 examples pad less than 4 and trained faster on 2-core CPUs
  # (docs/performance.md); 2 on a GPU.
  config.train.update(batch_size=128, min_length=1, max_length=40, steps=10000, learning_rate=1e-4,
                      warmup_steps=0, length_parts=8)
  config.eval.update(max_length=500, batch_size=128)
  config.encoding.learned.max_length = 2048
