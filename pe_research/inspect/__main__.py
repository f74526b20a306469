"""See what positions do: figures of an encoding, of a trained run, and the classic claims.

    python -m pe_research.inspect encoding NAME [--config=configs/default.py] [--config.x=...]
        [--max_position=N] [--out=docs/figures]
    python -m pe_research.inspect encoding NAME --workdir=RUN [--seed=S] [--out=RUN/inspect]
    python -m pe_research.inspect run WORKDIR [--lengths=16,32,48] [--max_length=N] [--batch_size=32]
        [--seed=S] [--out=WORKDIR/inspect]
    python -m pe_research.inspect claims [--workdir=runs/claims] [--out=docs/figures]
        [--config=configs/claims.py] [--config.x=...]

`encoding`: the encoding NAME of the config's model (at initialisation), or of a trained
run's model with --workdir (its trained parameters; NAME must be the run's encoding), over
positions 0..N-1, N the longest evaluated sequence by default (`encoding_figures`).
`run`: attention maps at the given lengths, entropy and accuracy by answer position at
every length up to --max_length, from the run's latest checkpoint (`run_figures`).
`claims`: trains the claims' runs in --workdir (resumable), writes their figures and
claims.md to --out and prints one verdict per claim (`claims`).
Errors (a bad name, a workdir without a run, a bad flag) are one line, as every command's
(`pe_research.cli`).
"""

import os
import sys

from pe_research import runtime

if __name__ == '__main__':
  runtime.configure()  # Before JAX is imported: may restart the process with tcmalloc (runtime.py).

from absl import flags  # noqa: E402

from pe_research import cli  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs')
# The commands and what follows each on the command line.
COMMANDS = {'encoding': 'NAME', 'run': 'WORKDIR', 'claims': ''}
USAGE = 'python -m pe_research.inspect encoding NAME | run WORKDIR | claims [--flags]'


def _positional(argv: list[str]) -> tuple[str, str]:
  """(command, its argument) taken out of argv: they must come first."""
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = f'{argv[1]!r}' if len(argv) > 1 else 'none'
    raise cli.UsageError(f'a command is required, got {given}; allowed: {USAGE}')
  command = argv.pop(1)
  if not COMMANDS[command]:
    return command, ''
  if len(argv) < 2 or argv[1].startswith('-'):
    raise cli.UsageError(f'{command} needs its {COMMANDS[command]} right after it: python -m pe_research.inspect '
                         f'{command} {COMMANDS[command]} [--flags]')
  return command, argv.pop(1)


def _flag_given(argv: list[str], name: str, overrides: bool = True) -> bool:
  """Whether argv sets --name (or, with `overrides`, a --name.field)."""
  return any(a == f'--{name}' or a.startswith(f'--{name}=') or (overrides and a.startswith(f'--{name}.'))
             for a in argv)


def _default_config(argv: list[str], file: str) -> None:
  """Puts --config=configs/<file> in argv unless a config file is given."""
  if not _flag_given(argv, 'config', overrides=False):
    argv.insert(1, f'--config={os.path.join(CONFIGS, file)}')


def define_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
  command, target = _positional(argv)
  flags.DEFINE_string('command', command, 'Set by the first argument.', flag_values=flag_values)
  flags.DEFINE_string('target', target, 'Set by the argument after the command.', flag_values=flag_values)
  define = lambda kind, name, default, text, **kw: getattr(flags, f'DEFINE_{kind}')(  # noqa: E731
      name, default, text, flag_values=flag_values, **kw)
  define('string', 'out', None, 'Directory for the figures (default: docs/figures, or <workdir>/inspect for a run).')
  if command == 'encoding':
    define('string', 'workdir', None, 'A trained run whose encoding parameters to draw (its config is used).')
    define('integer', 'seed', None, 'With --workdir: the seed to draw (default: the first that trained).')
    define('integer', 'max_position', 0, 'Positions 0..N-1 (0: the longest evaluated sequence).', lower_bound=0)
    if _flag_given(argv, 'workdir') and _flag_given(argv, 'config'):
      raise cli.UsageError('--config and --workdir: with --workdir the run\'s own config is used; give one of them')
    if not _flag_given(argv, 'workdir'):
      _default_config(argv, 'default.py')
      cli.add_config_flag(flag_values, argv, 'config', 'an experiment config file, e.g. configs/default.py')
  elif command == 'run':
    define('list', 'lengths', None, 'Input lengths of the attention maps (default: the longest training length, '
           'twice and three times it, up to --max_length).')
    define('integer', 'max_length', 0, 'Longest input length probed (0: the smaller of eval.max_length and 3x '
           'train.max_length).', lower_bound=0)
    define('integer', 'batch_size', 32, 'Examples per length.', lower_bound=1)
    define('integer', 'seed', None, 'The seed to draw (default: the first that trained).')
  else:
    define('string', 'workdir', 'runs/claims', 'Directory of the claims\' runs (one per arm; resumable).')
    define('list', 'claims', None, 'The claims to test (default: all): add_vs_concat, offset_linearity, sqrt_dk, '
           'attention_scale, extrapolation, layer_norm; only the runs they read are trained.')
    _default_config(argv, 'claims.py')
    cli.add_config_flag(flag_values, argv, 'config', 'the claims\' training protocol, configs/claims.py')


def _encoding(flag_values) -> list[str]:
  import flax.nnx as nnx  # noqa: PLC0415  (JAX starts here, after runtime.configure)

  from pe_research import encodings, validation  # noqa: PLC0415
  from pe_research.inspect import encoding_figures, probe  # noqa: PLC0415
  from pe_research.positions import position_bound  # noqa: PLC0415
  from pe_research.training.train_step import model_from_config  # noqa: PLC0415

  name = flag_values.target
  if name not in encodings.ENCODINGS:
    raise cli.UsageError(f'unknown encoding {name!r}; allowed: {", ".join(sorted(encodings.ENCODINGS))}')
  if flag_values.workdir:
    run = probe.load(flag_values.workdir, flag_values.seed)
    if run.config.encoding.name != name:
      raise cli.UsageError(f'{flag_values.workdir} trained encoding {run.config.encoding.name!r}, not {name!r}')
    config, task, model = run.config, run.task, run.model
    out, suffix = flag_values.out or os.path.join(flag_values.workdir, 'inspect'), '_trained'
  else:
    config = flag_values.config
    config.encoding.name = name
    task = validation.validate_command_line(config, flag_values['config'])
    model = nnx.view(model_from_config(config, task, nnx.Rngs(config.seed)), deterministic=True)
    out, suffix = flag_values.out or 'docs/figures', ''
  # The positions training placed: the longest training sequence's, or a random sampler's range.
  trained = position_bound(config.encoding.positions,
                           config.train.max_length + int(task.output_length(config.train.max_length)))
  length = flag_values.max_position or config.eval.max_length + int(task.output_length(config.eval.max_length))
  try:
    return encoding_figures.write(name, model, trained, length, bool(flag_values.workdir), out, suffix)
  except encoding_figures.NothingToDraw as e:
    raise cli.UsageError(str(e)) from None
  except ValueError as e:  # The encoding refuses these positions (a learned table too short).
    raise cli.UsageError(f'--max_position={length}: {cli.one_line(e)}') from None


def _run(flag_values) -> list[str]:
  from pe_research.inspect import probe, run_figures  # noqa: PLC0415  (JAX starts here)

  run = probe.load(flag_values.target, flag_values.seed)
  config, task = run.config, run.task
  longest = flag_values.max_length or min(config.eval.max_length, 3 * config.train.max_length)
  try:
    map_lengths = sorted({int(n) for n in flag_values.lengths}) if flag_values.lengths else sorted(
        {min(k * config.train.max_length, longest) for k in (1, 2, 3)})
  except ValueError:
    raise cli.UsageError(f'--lengths={",".join(flag_values.lengths)}: allowed: comma-separated integers') from None
  shortest = max(task.min_length, 1)
  if not all(shortest <= n <= longest for n in map_lengths):
    raise cli.UsageError(f'--lengths={",".join(map(str, map_lengths))}: allowed: {shortest}..{longest} (--max_length)')
  lengths = list(range(shortest, longest + 1))
  result = probe.probe(run, lengths, map_lengths, flag_values.batch_size)
  return run_figures.write(run, result, flag_values.out or os.path.join(flag_values.target, 'inspect'))


def _claims(flag_values) -> list[str]:
  from absl import logging  # noqa: PLC0415

  from pe_research import validation  # noqa: PLC0415  (JAX starts here)
  from pe_research.inspect import claims  # noqa: PLC0415

  validation.validate_command_line(flag_values.config, flag_values['config'])
  if not flag_values['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # One line per run instead of per compiled call.
  out = flag_values.out or 'docs/figures'
  command = ' '.join(['python -m pe_research.inspect', *sys.argv[1:]]) if sys.argv[1:2] == ['claims'] else (
      f'python -m pe_research.inspect claims --workdir={flag_values.workdir} --out={out}')
  names = flag_values.claims or list(claims.CLAIMS)
  unknown = [name for name in names if name not in claims.CLAIMS]
  if unknown:
    raise cli.UsageError(f'--claims: unknown claim {unknown[0]!r}; allowed: {", ".join(claims.CLAIMS)}')
  verdicts = claims.run(flag_values.config, flag_values.workdir, out, command, names)
  return [*dict.fromkeys(v.figure for v in verdicts), os.path.join(out, 'claims.md')]


def main(flag_values: flags.FlagValues) -> None:
  written = {'encoding': _encoding, 'run': _run, 'claims': _claims}[flag_values.command](flag_values)
  for path in written:
    print(f'wrote {path}')


if __name__ == '__main__':
  cli.run(main, define_flags, resumable=sys.argv[1:2] == ['claims'])  # Its runs resume.
