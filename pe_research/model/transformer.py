"""A small Transformer encoder for length-generalization tasks (Flax NNX).

token embedding * sqrt(D) -> input-stage encoding (plus Abacus digit ids, if given) -> N x
[attention, MLP] blocks with LayerNorm before (`pre`) or after (`post`) each sublayer ->
logits at the answer slots (the last block computes only those rows).
Causal or bidirectional attention; positions are an explicit input.
"""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from pe_research.encodings.base import Dims, Encoding, EncodingFactory
from pe_research.model.attention import MultiHeadAttention, attention_mask
from pe_research.model.dense import Dense
from pe_research.model.layer_norm import LayerNorm


class Block(nnx.Module):
  """One attention + MLP block with residual connections."""

  def __init__(self, dims: Dims, mlp_ratio: int, norm: str, dropout: float, encoding: Encoding | None,
               matmul_dtype, rngs: nnx.Rngs, attention_scale: str = 'sqrt_dk', train_length: int = 0):
    d = dims.model_dim
    self.norm_position = norm
    self.attention = MultiHeadAttention(d, dims.num_heads, rngs=rngs, encoding=encoding, matmul_dtype=matmul_dtype,
                                        attention_scale=attention_scale, train_length=train_length)
    self.mlp_in = Dense(d, mlp_ratio * d, matmul_dtype=matmul_dtype, rngs=rngs)
    self.mlp_out = Dense(mlp_ratio * d, d, matmul_dtype=matmul_dtype, rngs=rngs)
    self.norm_attention = LayerNorm(d, rngs=rngs)
    self.norm_mlp = LayerNorm(d, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def _mlp(self, x):
    return self.mlp_out(jax.nn.gelu(self.mlp_in(x)))

  def __call__(self, x, positions, mask, key, causal: bool, query_block: int | None, rows=None):
    """x [B, T, D] -> [B, T, D], or [B, O, D] at `rows` ([B, O] indices; see
    `MultiHeadAttention`'s query_rows): only those rows go on, attending to every row."""
    keys = jax.random.split(key, 2) if key is not None else (None, None)
    attend = lambda y: self.dropout(  # noqa: E731
        self.attention(y, positions, mask, causal=causal, query_block=query_block, query_rows_BxO=rows),
        rngs=keys[0])
    feed = lambda y: self.dropout(self._mlp(y), rngs=keys[1])  # noqa: E731
    residual = x if rows is None else jnp.take_along_axis(x, rows[:, :, None], axis=1)
    if self.norm_position == 'pre':
      x = residual + attend(self.norm_attention(x))
      return x + feed(self.norm_mlp(x))
    x = self.norm_attention(residual + attend(x))
    return self.norm_mlp(x + feed(x))


class Transformer(nnx.Module):
  """Encoder over `tokens` that predicts `output_vocab_size` classes at `answer_index`.

  Args:
    vocab_size: number of token ids (task inputs plus ANSWER and PAD).
    output_vocab_size: number of answer classes.
    num_layers, model_dim, num_heads, mlp_ratio: sizes; num_heads must divide model_dim.
    causal: whether a position attends only to itself and earlier positions.
    norm: 'pre' or 'post' LayerNorm.
    dropout: residual dropout rate (off in `.eval()` mode).
    encoding: factory (dims, rngs) -> Encoding; built once for the input stage and once
      per layer for the attention stage, where the encoding acts there.
    abacus: optional `pe_research.encodings.Abacus`, added after the input-stage encoding;
      it reads the token ids and, at training, a key (see `__call__`).
    matmul_dtype: 'float32', or 'bfloat16' for mixed precision: the operands of the
      projections, MLP and readout products are rounded to it, their sums are float32
      (`pe_research.model.dense`); encodings, LayerNorm and softmax stay float32.
    attention_scale: how attention scales its logits: 'sqrt_dk', 'none' or 'log_length'
      (`pe_research.model.attention.LogitScale`).
    train_length: the longest training sequence in tokens (input plus answer slots), where
      'log_length' starts its learned factor s log n at 1; read only by it.

  Inspection: `nnx.view(model, capture_weights=True)` sows every layer's attention weights
  (`MultiHeadAttention`); `nnx.capture(model, nnx.Intermediate)(...)` returns them.
  """

  def __init__(
      self,
      *,
      vocab_size: int,
      output_vocab_size: int,
      num_layers: int,
      model_dim: int,
      num_heads: int,
      mlp_ratio: int,
      causal: bool,
      norm: str,
      dropout: float,
      encoding: EncodingFactory,
      rngs: nnx.Rngs,
      abacus: nnx.Module | None = None,
      matmul_dtype='float32',
      attention_scale: str = 'sqrt_dk',
      train_length: int = 0,
  ):
    if norm not in ('pre', 'post'):
      raise ValueError(f"norm={norm!r}; allowed: 'pre', 'post'")
    if num_layers <= 0:
      raise ValueError(f'num_layers={num_layers} must be positive')
    if num_heads <= 0 or model_dim % num_heads:
      raise ValueError(f'num_heads={num_heads} must be positive and divide model_dim={model_dim}')
    dims = Dims(model_dim=model_dim, num_heads=num_heads, causal=causal)
    first = encoding(dims, rngs)
    if first.causal_only and not causal:
      raise ValueError(f'{type(first).__name__} is defined for causal attention only; set model.causal=True')
    self.causal = causal
    self.embed = nnx.Embed(vocab_size, model_dim, rngs=rngs)
    self.input_encoding = first if first.acts_on_input else None
    self.abacus = abacus
    # One attention-stage instance per layer (its own parameters), reusing `first` if free.
    spare = [] if first.acts_on_input else [first]
    layer_encodings = [
        (spare.pop() if spare else encoding(dims, rngs)) if first.acts_on_attention else None
        for _ in range(num_layers)
    ]
    self.blocks = nnx.List([Block(dims, mlp_ratio, norm, dropout, e, matmul_dtype, rngs, attention_scale, train_length)
                            for e in layer_encodings])
    self.final_norm = LayerNorm(model_dim, rngs=rngs) if norm == 'pre' else None
    self.head = Dense(model_dim, output_vocab_size, matmul_dtype=matmul_dtype, rngs=rngs)

  @property
  def position_blind(self) -> bool:
    """Whether the model cannot tell its answer slots apart: bidirectional attention and no
    position entering anywhere (no input-stage code, no attention-stage term, no Abacus
    ids). All its answer slots then get the same logits, which bounds its token accuracy by
    `training.metrics.position_blind_ceiling` (reports draw that ceiling)."""
    attention_terms = any(type(block.attention.encoding).acts_on_attention for block in self.blocks)
    return not self.causal and self.input_encoding is None and self.abacus is None and not attention_terms

  def __call__(self, tokens_BxT, positions_BxT, valid_BxT, answer_index_BxO, dropout_key=None, *,
               query_block: int | None = None):
    """Logits [B, O, output_vocab_size] at the answer slots.

    `dropout_key` drives the training-time randomness: dropout and Abacus offsets (layer i
    folds in i, Abacus folds in num_layers); None when there is none. `query_block` makes
    attention blockwise over the queries (see `MultiHeadAttention`), for long evaluation."""
    x = self.embed(tokens_BxT) * math.sqrt(self.embed.features)
    if self.input_encoding is not None:
      x = self.input_encoding.embed(x, positions_BxT)
    if self.abacus is not None:
      abacus_key = None if dropout_key is None else jax.random.fold_in(dropout_key, len(self.blocks))
      x = self.abacus(x, tokens_BxT, abacus_key)
    mask = attention_mask(valid_BxT, causal=False)  # Padding; causality is applied per block.
    for i, block in enumerate(self.blocks):
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
      # Only the answer slots are read: the last block computes just their rows.
      rows = answer_index_BxO if i == len(self.blocks) - 1 else None
      x = block(x, positions_BxT, mask, key, self.causal, query_block, rows)
    if self.final_norm is not None:
      x = self.final_norm(x)
    return self.head(x)
