"""`python -m pe_research.inspect`: every figure command writes decodable PNGs of their size on
a tiny config, the claims' numbers hold (offset linearity, concatenation, sqrt(d_k)), the
verdicts follow from the numbers, and bad input is one line. One tiny run (the claims'
`learned` arm) is trained once for the module and read by the run and encoding commands."""

import contextlib
import io as io_lib
import math
import os
import re
import struct

import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from pe_research import cli
from pe_research.encodings.sinusoidal import sinusoid
from pe_research.inspect import __main__ as inspect_main
from pe_research.inspect import claims, figures, probe
from tests.conftest import ROOT

TINY = ['--config.model.num_layers=1', '--config.model.model_dim=16', '--config.model.num_heads=2',
        '--config.train.steps=50', '--config.train.steps_per_call=25', '--config.train.batch_size=16',
        '--config.train.max_length=6', '--config.train.warmup_steps=10', '--config.train.length_parts=2',
        '--config.eval.max_length=10', '--config.eval.batch_size=8']
ENCODING_TINY = [f'--config={ROOT}/configs/default.py', *TINY]


def command(*argv) -> str:
  """Runs the inspect command line in this process; its stdout. A one-line failure is an
  AssertionError with that line."""
  stdout, stderr = io_lib.StringIO(), io_lib.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
      cli.run(inspect_main.main, inspect_main.define_flags, ['prog', *argv])
    except SystemExit as e:
      raise AssertionError(f'exit {e.code}: {stderr.getvalue()}') from None
  return stdout.getvalue()


def failure(*argv) -> tuple[int, list[str]]:
  """(exit status, stderr lines) of a command that fails."""
  stderr = io_lib.StringIO()
  with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
    cli.run(inspect_main.main, inspect_main.define_flags, ['prog', *argv])
  return exit_info.value.code, [line for line in stderr.getvalue().splitlines() if line.strip()]


def written(stdout: str) -> list[str]:
  return [line.removeprefix('wrote ') for line in stdout.splitlines() if line.startswith('wrote ')]


def png_size(path: str) -> tuple[int, int]:
  """(width, height) from the IHDR chunk of a PNG, which must also decode."""
  with open(path, 'rb') as f:
    header = f.read(24)
  assert header[:8] == b'\x89PNG\r\n\x1a\n' and header[12:16] == b'IHDR', path
  width, height = struct.unpack('>II', header[16:24])
  assert matplotlib.image.imread(path).shape[:2] == (height, width)
  return width, height


def inches(width: float, height: float) -> tuple[int, int]:
  return round(width * figures.DPI), round(height * figures.DPI)


@pytest.fixture(scope='module')
def claims_out(tmp_path_factory):
  """The claims that read one run (the learned arm, trained here) or none, on a tiny config:
  (workdir, out directory, stdout)."""
  root = tmp_path_factory.mktemp('claims')
  workdir, out = str(root / 'runs'), str(root / 'figures')
  stdout = command('claims', '--claims=offset_linearity,sqrt_dk', f'--workdir={workdir}', f'--out={out}', *TINY)
  return workdir, out, stdout


def test_the_claims_command_writes_figures_verdicts_and_markdown(claims_out):
  workdir, out, stdout = claims_out
  assert sorted(os.listdir(workdir)) == ['learned']  # Only the arm these claims read.
  paths = written(stdout)
  assert [os.path.basename(p) for p in paths] == ['claim_offset_linearity.png', 'claim_sqrt_dk.png', 'claims.md']
  assert png_size(paths[0]) == inches(13, 4) and png_size(paths[1]) == inches(12, 3.6)
  assert 'the sinusoid of p + d is a fixed linear map (a rotation per frequency pair) of the sinusoid of p: ' \
         'supported for sinusoidal' in stdout
  assert "keeps the logits' variance at 1 and the softmax out of saturation: supported" in stdout
  markdown = open(paths[2]).read()
  assert '| **supported for sinusoidal** |' in markdown and '![claim_sqrt_dk.png](claim_sqrt_dk.png)' in markdown
  assert '| learned (underfit) | 7,442 |' in markdown  # The runs table: 50 steps learn little.


def test_the_run_command_draws_attention_entropy_and_accuracy_by_position(claims_out, tmp_path):
  run_dir = os.path.join(claims_out[0], 'learned')
  paths = written(command('run', run_dir, '--lengths=6,10', '--batch_size=4', f'--out={tmp_path}'))
  assert [os.path.basename(p) for p in paths] == ['attention_L6.png', 'attention_L10.png', 'entropy.png',
                                                  'accuracy_by_position.png']
  # 1 layer x 2 heads of maps; the other two fixed sizes.
  assert png_size(paths[0]) == inches(2.1 * 2 + 0.4, 1.8 + 0.8)
  assert png_size(paths[2]) == inches(7, 4.2) and png_size(paths[3]) == inches(8, 4.2)
  assert written(command('run', run_dir, '--batch_size=2'))[0].startswith(os.path.join(run_dir, 'inspect'))


def test_the_probe_reads_weights_that_are_distributions_over_the_real_tokens(claims_out):
  run = probe.load(os.path.join(claims_out[0], 'learned'))
  result = probe.probe(run, [1, 4, 8], [4, 8], batch_size=4)
  for length, map_LxHxOxT in result.maps.items():
    assert map_LxHxOxT.shape == (1, 2, length, 2 * length)  # reverse_string: `length` answer slots.
    np.testing.assert_allclose(map_LxHxOxT.sum(-1), 1.0, rtol=1e-5)
  assert np.all(result.entropy <= result.uniform_entropy[:, None, None] + 1e-4)
  np.testing.assert_allclose(result.uniform_entropy, np.log(2 * result.lengths), rtol=1e-5)  # Bidirectional.
  assert np.isnan(result.accuracy[0, 1:]).all() and not np.isnan(result.accuracy[2]).any()


@pytest.mark.parametrize('name, size', [
    ('sinusoidal', (8.4, 3.3)),
    ('alibi', (3.4 * 3, 2.5 + 0.6)),  # Every layer alike: one row, three query positions.
    ('t5_bias', (3.4 * 3, 2.5 + 0.6)),
])
def test_the_encoding_command_draws_an_encoding_from_its_module(name, size, tmp_path):
  (path,) = written(command('encoding', name, f'--out={tmp_path}', *ENCODING_TINY))
  assert os.path.basename(path) == f'encoding_{name}.png' and png_size(path) == inches(*size)


def test_the_encoding_command_draws_a_trained_run_s_parameters(claims_out):
  run_dir = os.path.join(claims_out[0], 'learned')
  (path,) = written(command('encoding', 'learned', f'--workdir={run_dir}'))
  assert path == os.path.join(run_dir, 'inspect', 'encoding_learned_trained.png')
  assert png_size(path) == inches(8.4, 3.3)


@pytest.mark.parametrize('argv, pattern', [
    ([], r'usage error: a command is required, got none; allowed: python -m pe_research.inspect encoding NAME'),
    (['plot'], r"a command is required, got 'plot'"),
    (['encoding'], r'usage error: encoding needs its NAME right after it'),
    (['encoding', 'sinusoidl'], r"usage error: unknown encoding 'sinusoidl'; allowed: alibi, cope, "),
    (['encoding', 'none'], r"encoding 'none' puts no position into the model .*: nothing to picture"),
    (['encoding', 'learned', '--max_position=300'], r'--max_position=300: learned encoding has max_length=256 rows'),
    (['encoding', 'rope', '--workdir=/nonexistent'], r'usage error: /nonexistent holds no run \(no config.json\)'),
    (['encoding', 'rope', '--workdir=w', '--config=c.py'], r'--config and --workdir'),
    (['encoding', 'rope', '--config.model.num_heads=5'], r'config.model.num_heads=5 does not divide'),
    (['run', '/nonexistent'], r'usage error: /nonexistent holds no run'),
    (['run', '--lengths=4'], r'run needs its WORKDIR right after it'),
    (['claims', '--claims=everything'], r"--claims: unknown claim 'everything'; allowed: add_vs_concat"),
    (['claims', '--config.train.stepz=3'], r"--config.train.stepz=3: no such field; did you mean 'steps'"),
])
def test_bad_input_is_one_line(argv, pattern):
  status, lines = failure(*argv)
  assert status == 2 and len(lines) == 1, lines
  assert re.search(pattern, lines[0]), lines[0]


def test_a_run_s_encoding_and_seeds_are_checked(claims_out):
  run_dir = os.path.join(claims_out[0], 'learned')
  assert failure('encoding', 'rope', f'--workdir={run_dir}')[1] == [
      f"usage error: {run_dir} trained encoding 'learned', not 'rope'"]
  assert failure('run', run_dir, '--seed=7')[1] == [f'usage error: --seed=7: {run_dir} has no such seed that '
                                                    'trained; allowed: 0']
  assert 'allowed: 1..10' in failure('run', run_dir, '--lengths=0,4')[1][0]


# --- the claims' numbers --------------------------------------------------------------


def test_the_sinusoid_of_p_plus_d_is_a_linear_map_of_the_sinusoid_of_p_and_a_random_code_s_is_not():
  code = np.asarray(sinusoid(jnp.arange(256), 64), np.float64)
  random = np.random.default_rng(0).normal(size=(256, 64))
  for d in (1, 5, 16):
    assert claims.offset_residual(code, d) < 1e-5
    assert claims.offset_residual(random, d) > 0.5
    assert claims.offset_residual(random, d, held_out=True) > 0.5
    # The map is the rotation of each frequency pair by d w_k.
    np.testing.assert_allclose(code[d:], code[:-d] @ claims.sinusoid_rotation(64, d).T, atol=2e-5)


def test_concatenating_and_projecting_equals_adding_a_projected_code():
  projected, as_addition = claims.concat_identity(dim=32, length=20)
  assert projected < 1e-5 and as_addition < 1e-5


def test_dividing_by_sqrt_dk_keeps_the_logit_variance_at_one_and_the_softmax_unsaturated():
  stats = claims.softmax_statistics([4, 64, 512])
  np.testing.assert_allclose(stats['variance_sqrt_dk'], 1.0, atol=0.1)
  np.testing.assert_allclose(stats['variance_none'] / np.array([4, 64, 512]), 1.0, atol=0.1)
  assert stats['max_weight_none'][-1] > 0.8 and stats['max_weight_sqrt_dk'].max() < 0.3
  assert stats['entropy_none'][-1] < 0.5 < 3 < stats['entropy_sqrt_dk'].min() < math.log(64)


def _result(in_distribution, unseen, steps=(100, 200, 300), train_accuracy=(0.5, 0.9, 0.99)):
  lengths = np.arange(1, 21)
  return claims.Result(lengths, np.where(lengths <= 10, in_distribution, unseen), in_distribution, unseen, 0.5, 10,
                       np.array(steps), np.array([0.7, 0.3, 0.1]), np.array(train_accuracy), 1000, '')


@pytest.mark.parametrize('sinusoidal_unseen, verdict', [(0.51, 'not supported'), (0.8, 'partly'),
                                                        (0.97, 'supported')])
def test_the_extrapolation_verdict_follows_the_share_of_accuracy_kept(sinusoidal_unseen, verdict, tmp_path):
  results = {'sinusoidal': _result(0.99, sinusoidal_unseen), 'learned': _result(0.99, 0.55),
             'rope': _result(0.99, 0.56), 'alibi': _result(0.99, 0.78)}
  (outcome,) = claims.extrapolation(results, None, str(tmp_path))
  assert outcome.verdict == verdict and png_size(outcome.figure) == inches(7, 4.2)
  assert f'unseen-lengths accuracy {100 * sinusoidal_unseen:.1f}% against chance 50%' in outcome.numbers


def test_an_extrapolation_verdict_on_a_model_that_did_not_learn_its_lengths_is_undecided(tmp_path):
  results = {'sinusoidal': _result(0.7, 0.6), 'learned': _result(0.7, 0.65), 'rope': _result(0.99, 0.56),
             'alibi': _result(0.99, 0.78)}
  (outcome,) = claims.extrapolation(results, None, str(tmp_path))
  assert outcome.verdict == 'undecided (sinusoidal did not learn its training lengths)'
  assert 'learned 65.0% (underfit: 70.0% in distribution)' in outcome.numbers and outcome.numbers.endswith('alibi')


def test_the_layer_norm_verdict_compares_the_steps_to_95_percent(tmp_path):
  pre = _result(0.99, 0.5, train_accuracy=(0.5, 0.96, 0.99))
  late = _result(0.99, 0.5, steps=(100, 500, 900), train_accuracy=(0.5, 0.9, 0.96))
  (outcome,) = claims.layer_norm({'sinusoidal': pre, 'sinusoidal,norm=post': late}, None, str(tmp_path))
  assert outcome.verdict == 'supported' and 'pre-LN at step 200, post-LN at step 900' in outcome.numbers
  (outcome,) = claims.layer_norm({'sinusoidal': pre, 'sinusoidal,norm=post': pre}, None, str(tmp_path))
  assert outcome.verdict == 'no difference at this depth'
