"""The Transformer, its attention layer and `attend` (the one function all attention goes
through), Dense and LayerNorm layers and the answer-slot readout. Accelerated backends (the
CPU kernels) live in `pe_research.model.kernels`, behind `attend`, `Dense` and `LayerNorm`."""

from pe_research.model.attention import (
    LogitScale, MultiHeadAttention, attend, attention_logits, attention_mask, attention_weights)
from pe_research.model.dense import Dense
from pe_research.model.layer_norm import LayerNorm
from pe_research.model.readout import Sequence, layout, model_vocab_size
from pe_research.model.transformer import Block, Transformer

__all__ = [
    'Block', 'Dense', 'LayerNorm', 'LogitScale', 'MultiHeadAttention', 'Sequence', 'Transformer', 'attend',
    'attention_logits', 'attention_mask', 'attention_weights', 'layout', 'model_vocab_size',
]
