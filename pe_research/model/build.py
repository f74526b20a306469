"""Builds the Transformer for a task from the model's sizes and an encoding factory."""

from collections.abc import Callable

import flax.nnx as nnx

from pe_research.encodings import Abacus
from pe_research.encodings.base import EncodingFactory
from pe_research.model.readout import model_vocab_size
from pe_research.model.transformer import Transformer
from pe_research.tasks.base import Task

# (digit tokens, answer token, model width, rngs) -> Abacus, e.g. `Abacus.from_config` with
# its config section bound.
AbacusFactory = Callable[[tuple[int, ...], int, int, nnx.Rngs], Abacus]


def build_model(task: Task, encoding: EncodingFactory, rngs: nnx.Rngs, *, num_layers: int, model_dim: int,
                num_heads: int, mlp_ratio: int, causal: bool, norm: str, dropout: float, matmul_dtype='float32',
                attention_scale: str = 'sqrt_dk', train_length: int = 0,
                abacus: AbacusFactory | None = None) -> Transformer:
  """The `Transformer` that reads `task`'s sequences (its tokens plus the answer and padding
  tokens, `readout.layout`) and predicts its output classes, with the encoding that
  `encoding(dims, rngs)` builds and, if `abacus` is given, Abacus ids of the task's digits
  on top. The other arguments are the Transformer's (`config.model` holds them, and
  `train_length` is the longest training sequence)."""
  return Transformer(
      vocab_size=model_vocab_size(task.input_vocab_size),
      output_vocab_size=task.output_vocab_size,
      num_layers=num_layers,
      model_dim=model_dim,
      num_heads=num_heads,
      mlp_ratio=mlp_ratio,
      causal=causal,
      norm=norm,
      dropout=dropout,
      encoding=encoding,
      rngs=rngs,
      # The answer placeholder's id is the input vocabulary size (see `readout.layout`).
      abacus=abacus(task.digit_tokens, task.input_vocab_size, model_dim, rngs) if abacus else None,
      matmul_dtype=matmul_dtype,
      attention_scale=attention_scale,
      train_length=train_length,
  )
