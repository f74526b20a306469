"""The model's accelerated backends: C++ kernels for XLA:CPU and hand-written backward passes.

The model reaches them at three seams only, and each works without them (no compiler,
another platform, other dtypes, or `PE_RESEARCH_CPU_KERNELS=0`: `available()` is False and
the same computation runs in XLA):
  * attention: `pe_research.model.attention.attend` picks `fused_softmax_attention` or
    `query_key_logits` / `softmax_values` / `masked_softmax` from what the encoding adds;
  * `pe_research.model.LayerNorm` calls `layer_norm.layer_norm`;
  * `pe_research.model.Dense` calls `matmul.matmul`.

Files: `attention.py` (attention's contractions with their backward passes, the fused
kernel's entry), `cpu_attention.py` (the fused kernel's FFI call and backward),
`layer_norm.py`, `matmul.py` (its backward and transposes), `cpu_kernels.py` (builds and
registers the C++ sources `cpu_*.cc`, `cpu_vectors.h`).
"""

from pe_research.model.kernels.attention import (
    MASKED_LOGIT, fused_softmax_attention, masked_softmax, query_key_logits, softmax_values)
from pe_research.model.kernels.cpu_kernels import available, fused_where_possible

__all__ = [
    'MASKED_LOGIT', 'available', 'fused_softmax_attention', 'fused_where_possible', 'masked_softmax',
    'query_key_logits', 'softmax_values',
]
