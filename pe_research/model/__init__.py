"""The Transformer, its attention layer, Dense and LayerNorm layers and the answer-slot readout."""

from pe_research.model.attention import MultiHeadAttention, attention_mask
from pe_research.model.dense import Dense
from pe_research.model.layer_norm import LayerNorm
from pe_research.model.readout import Sequence, layout, model_vocab_size
from pe_research.model.transformer import Block, Transformer

__all__ = [
    'Block', 'Dense', 'LayerNorm', 'MultiHeadAttention', 'Sequence', 'Transformer', 'attention_mask', 'layout',
    'model_vocab_size',
]
