"""Builds the Transformer that a config describes for a task."""

import functools

import flax.nnx as nnx

from pe_research.encodings import make_encoding
from pe_research.model.readout import model_vocab_size
from pe_research.model.transformer import Transformer
from pe_research.tasks.base import Task


def build_model(config, task: Task, rngs: nnx.Rngs) -> Transformer:
  """The model of `config.model` with the encoding of `config.encoding`."""
  m = config.model
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
      encoding=functools.partial(make_encoding, config.encoding),
      rngs=rngs,
  )
