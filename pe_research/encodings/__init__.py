"""Encoding registry: every positional encoding by its config name.

Adding an encoding is one new file plus one line here. Each class documents its formula,
paper and convention; see `pe_research.encodings.base` for the hooks. `Abacus` is not in the
registry: it adds digit-place ids on top of any encoding (`encoding.abacus.enabled`).
"""

import flax.nnx as nnx

from pe_research.encodings.abacus import Abacus
from pe_research.encodings.alibi import ALiBi
from pe_research.encodings.base import Dims, Encoding, NoPE
from pe_research.encodings.cope import CoPE
from pe_research.encodings.dynamic_bias import DynamicBias
from pe_research.encodings.fire import FIRE
from pe_research.encodings.kerple import KerpleLog, KerplePower
from pe_research.encodings.learned import Learned
from pe_research.encodings.rope import RoPE
from pe_research.encodings.shaw import Shaw
from pe_research.encodings.sinusoidal import ScaledSinusoidal, Sinusoidal, SinusoidalConcat
from pe_research.encodings.t5_bias import T5Bias
from pe_research.encodings.xl_relative import XLRelative
from pe_research.encodings.xpos import XPos

ENCODINGS: dict[str, type[Encoding]] = {
    'none': NoPE,
    'sinusoidal': Sinusoidal,
    'sinusoidal_concat': SinusoidalConcat,
    'learned': Learned,
    'rope': RoPE,
    'alibi': ALiBi,
    't5_bias': T5Bias,
    'shaw': Shaw,
    'xl_relative': XLRelative,
    'kerple_log': KerpleLog,
    'kerple_power': KerplePower,
    'fire': FIRE,
    'xpos': XPos,
    'cope': CoPE,
    'scaled_sinusoidal': ScaledSinusoidal,
    'dynamic_bias': DynamicBias,
}


def encoding_class(name: str) -> type[Encoding]:
  """The class registered as `name`; the error lists every known name."""
  if name not in ENCODINGS:
    raise ValueError(f'unknown encoding {name!r}; known encodings: {", ".join(sorted(ENCODINGS))}')
  return ENCODINGS[name]


def make_encoding(config, dims: Dims, rngs: nnx.Rngs) -> Encoding:
  """Builds the encoding named by `config.name` from the `encoding` config section."""
  return encoding_class(config.name).from_config(config, dims, rngs)


__all__ = ['Abacus', 'Dims', 'Encoding', 'ENCODINGS', 'encoding_class', 'make_encoding']
