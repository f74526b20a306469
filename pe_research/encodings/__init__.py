"""Encoding registry: every positional encoding by its config name.

Adding an encoding is one new file plus one line here: the class documents its formula,
paper and convention (see `pe_research.encodings.base` for the hooks) and declares its
options with their defaults (`section`, `options`), from which `default_config` assembles
`config.encoding.<section>`. `Abacus` is not in the registry: it adds digit-place ids on top
of any encoding (`encoding.abacus.enabled`); its options are assembled with the others.
"""

import dataclasses

import flax.nnx as nnx
import ml_collections

from pe_research.encodings.abacus import Abacus
from pe_research.encodings.alibi import ALiBi
from pe_research.encodings.base import Dims, Encoding, EncodingFactory, NoPE
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


def encoding_factory(config, train_length: int = 0) -> EncodingFactory:
  """(dims, rngs) -> the encoding `config.name` names, built from the `encoding` config
  section, with `train_length` (the positions trained on, `Dims.train_length`) in its dims."""
  cls = encoding_class(config.name)
  return lambda dims, rngs: cls.from_config(config, dataclasses.replace(dims, train_length=train_length), rngs)


def default_config() -> ml_collections.ConfigDict:
  """The option sections of `config.encoding`, {section: {option: default}}, as every
  registered encoding and Abacus declare them (`HasOptions`); a section two classes declare
  differently is an error."""
  sections, owners = {}, {}
  for cls in (*ENCODINGS.values(), Abacus):
    for section, options in cls.option_sections().items():
      if sections.setdefault(section, options) is not options:
        raise TypeError(
            f'config section encoding.{section} is declared by both {owners[section]} and {cls.__name__}')
      owners.setdefault(section, cls.__name__)
  return ml_collections.ConfigDict({section: dict(options) for section, options in sections.items()})


__all__ = [
    'Abacus', 'Dims', 'Encoding', 'ENCODINGS', 'default_config', 'encoding_class', 'encoding_factory', 'make_encoding',
]
