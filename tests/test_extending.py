"""Extending the project: an encoding owns its options, and adding one is one class plus one
registry line. Here the class is defined in the test and registered for the test's duration
only; it is configured from the command line the way `pe_research.main` is, validated and
trained one step, and no file changes."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_research import cli, encodings, main
from pe_research.encodings import ENCODINGS
from pe_research.encodings.base import Encoding, relative_offsets
from pe_research.training import train_step
from pe_research.validation import validate
from tests.conftest import ROOT, default

# config.encoding's option sections as configs/default.py declared them before the encodings
# declared their own (commit c52ce72): runs started then must resume, and a run resumes only
# under the same config.json fields and values.
SECTIONS_OF_EARLIER_RUNS = {
    'sinusoidal': {'base': 10000.0},
    'learned': {'max_length': 256},
    'rope': {'base': 10000.0, 'fraction': 1.0, 'scaling': 'none', 'scale': 4.0, 'original_length': 0,
             'yarn_alpha': 1.0, 'yarn_beta': 32.0},
    'scaled_sinusoidal': {'init_scale': 1.0},
    'shaw': {'max_distance': 16},
    'xl_relative': {'base': 10000.0},
    'fire': {'mlp_width': 32, 'init_c': 0.1, 'init_threshold': 512.0, 'eps': 1e-6},
    'dynamic_bias': {'mlp_width': 32, 'log_distance': False},
    'xpos': {'base': 10000.0, 'scale_base': 512.0, 'gamma': 0.4},
    'cope': {'max_positions': 64},
    'abacus': {'enabled': False, 'max_k': 99, 'max_length': 256},
    't5': {'num_buckets': 32, 'max_distance': 128},
}


def test_the_assembled_options_are_those_of_earlier_runs():
  typed = lambda section: {k: (v, type(v)) for k, v in section.items()}  # noqa: E731
  config = default.get_config()
  for section, options in SECTIONS_OF_EARLIER_RUNS.items():
    assert typed(config.encoding[section].to_dict()) == typed(options), section
  # Besides the options, config.encoding holds the encoding's name and the positions' sampler.
  assert set(config.encoding) == {'name', 'positions', *SECTIONS_OF_EARLIER_RUNS}


class Toy(Encoding):
  """A toy distance penalty with one option: logits_h[i, j] += -scale * |i - j|."""

  acts_on_attention = True
  section = 'toy'
  options = {
      # Penalty per unit of distance. 0.5: a test value.
      'scale': 0.5,
  }

  def __init__(self, scale: float):
    self.scale = scale

  @classmethod
  def check_config(cls, config, dims, longest_sequence):
    super().check_config(config, dims, longest_sequence)
    if not config.toy.scale >= 0:
      raise ValueError(f'config.encoding.toy.scale={config.toy.scale} must be >= 0')

  @classmethod
  def from_config(cls, config, dims, rngs):
    return cls(config.toy.scale)

  def bias(self, q_positions_BxT, k_positions_BxS):
    distance_BxTxS = jnp.abs(relative_offsets(q_positions_BxT, k_positions_BxS)).astype(jnp.float32)
    return -self.scale * distance_BxTxS[:, None]


def _command_line_config(*overrides: str):
  """The config that `python -m pe_research.main --config=configs/default.py:encoding=toy
  <overrides>` runs (its own flag parsing), shrunk to train in seconds."""
  shrink = ('--config.model.num_layers=1', '--config.model.model_dim=16', '--config.model.num_heads=2',
            '--config.train.batch_size=4', '--config.train.max_length=4', '--config.train.length_parts=1',
            '--config.eval.max_length=6')
  argv = ['main', f'--config={ROOT}/configs/default.py:encoding=toy', '--workdir=unused', *shrink, *overrides]
  return cli.parse(argv, main.define_flags).config


def test_a_new_encoding_is_one_class_and_one_registry_line(monkeypatch):
  monkeypatch.setitem(ENCODINGS, 'toy', Toy)  # The registry line.
  assert encodings.default_config().toy.to_dict() == {'scale': 0.5}
  config = _command_line_config('--config.encoding.toy.scale=0.25')
  assert config.encoding.name == 'toy' and config.encoding.toy.scale == 0.25
  task = validate(config)
  training = train_step.training_from_config(config, task)
  state = training.init(jax.random.key(0))
  model = nnx.merge(nnx.split(training.abstract)[0], state.params)
  assert isinstance(model.blocks[0].attention.encoding, Toy) and model.blocks[0].attention.encoding.scale == 0.25
  state, metrics = jax.jit(training.step)(state, jax.random.key(1))
  assert int(state.step) == 1 and np.isfinite(float(metrics['loss']))
  with pytest.raises(ValueError, match=r'config.encoding.toy.scale=-1.0 must be >= 0'):
    validate(_command_line_config('--config.encoding.toy.scale=-1.0'))


def test_a_section_declared_twice_differently_is_refused(monkeypatch):
  class OtherToy(Toy):
    section = 'toy'
    options = {'scale': 1.0}  # Toy's section, other defaults.

  monkeypatch.setitem(ENCODINGS, 'toy', Toy)
  monkeypatch.setitem(ENCODINGS, 'other_toy', OtherToy)
  with pytest.raises(TypeError, match='config section encoding.toy is declared by both Toy and OtherToy'):
    encodings.default_config()


def test_a_subclass_reads_its_parents_sections_and_its_own():
  assert set(ENCODINGS['scaled_sinusoidal'].option_sections()) == {'sinusoidal', 'scaled_sinusoidal'}
  assert ENCODINGS['sinusoidal_concat'].option_sections() == ENCODINGS['sinusoidal'].option_sections()
