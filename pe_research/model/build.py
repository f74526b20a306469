"""Builds the Transformer that a config describes for a task."""

import dataclasses

import flax.nnx as nnx

from pe_research.encodings import Abacus, make_encoding
from pe_research.model.readout import model_vocab_size
from pe_research.model.transformer import Transformer
from pe_research.positions import position_bound
from pe_research.tasks.base import Task


def build_model(config, task: Task, rngs: nnx.Rngs) -> Transformer:
  """The model of `config.model` with the encoding of `config.encoding` (and Abacus ids on
  top when `config.encoding.abacus.enabled`)."""
  m = config.model
  longest_train = config.train.max_length + int(task.output_length(config.train.max_length))
  train_length = position_bound(config.encoding.positions, longest_train)

  def encoding(dims, rngs):
    return make_encoding(config.encoding, dataclasses.replace(dims, train_length=train_length), rngs)

  abacus = None
  if config.encoding.abacus.enabled:
    # The answer placeholder's id is the input vocabulary size (see `readout.layout`).
    abacus = Abacus.from_config(config.encoding, task.digit_tokens, task.input_vocab_size, m.model_dim, rngs)
  return Transformer(
      vocab_size=model_vocab_size(task.input_vocab_size),
      output_vocab_size=task.output_vocab_size,
      num_layers=m.num_layers,
      model_dim=m.model_dim,
      num_heads=m.num_heads,
      mlp_ratio=m.mlp_ratio,
      causal=m.causal,
      norm=m.norm,
      dropout=m.dropout,
      encoding=encoding,
      rngs=rngs,
      abacus=abacus,
      matmul_dtype=m.matmul_dtype,
  )
