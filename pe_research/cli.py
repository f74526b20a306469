"""The command line's edge: whatever a user types or meets ends in one line, never a traceback.

Every entry point (`pe_research.main`, `.sweep`, `.evaluate`, `.report`) runs through `run`:
  * flags are parsed into a fresh `absl.flags.FlagValues` (so the entry points can run in
    one process, as the tests do); a bad flag, a stray argument or a missing required flag
    is a `UsageError`;
  * config and sweep files are loaded by `load_config_file`, whose errors name the file and
    the line (a missing file, a directory, a syntax error, no `get_config`, an exception in
    it, a result that is not a ConfigDict); overrides on the command line (`--config.x.y=v`)
    are checked against the loaded config, locked, as ml_collections' `config_flags` does;
  * at run time, a `OneLineError` (a config error, a usage error, a failed run, a busy
    workdir) prints as `<kind>: <message>`, Ctrl-C (SIGINT) and SIGTERM
    stop with a line saying that the same command resumes, and a full disk or an
    unwritable directory names the path.
Exit status: 2 for usage and config errors, 130 after Ctrl-C, 1 otherwise. A traceback
still shows for what can only be a bug of the package.
"""

import errno
import importlib.util
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable

import ml_collections
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags


class OneLineError(Exception):
  """An error a user can cause or meet, whose one-line message says all they need: `run`
  prints `<prefix>: <message>` and exits with `status`, no traceback."""

  prefix = 'error'
  status = 1


class UsageError(OneLineError):
  """A mistake on the command line or in a file the user wrote."""

  prefix = 'usage error'
  status = 2


class ConfigError(OneLineError, ValueError):
  """A config value that cannot run, found before anything compiles; names the field."""

  prefix = 'config error'
  status = 2


def one_line(error: BaseException) -> str:
  """The error's message on one line (ml_collections quotes and nests its messages)."""
  text = str(error)
  while len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':  # A repr of a repr ...
    text = text[1:-1].replace('\\n', '\n').replace("\\'", "'")
  return '; '.join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__


def _file_line(path: str, tb) -> str:
  """'path:line' of the innermost frame of `tb` in the file `path`, else 'path'."""
  frames = [f for f in traceback.extract_tb(tb) if os.path.abspath(f.filename) == os.path.abspath(path)]
  return f'{path}:{frames[-1].lineno}' if frames else path


def load_config_file(spec: str, what: str = 'config') -> ml_collections.ConfigDict:
  """`get_config(variant)` of the file in `spec` ('path' or 'path:variant'), as
  `--config=spec` gives it; UsageError naming the file (and line) when it cannot."""
  path, _, variant = spec.partition(':')
  if not path:
    raise UsageError(f'--{what} is empty; allowed: a Python file with get_config(), e.g. configs/default.py')
  if os.path.isdir(path):
    raise UsageError(f'--{what}={spec}: {path} is a directory; allowed: a Python file with get_config()')
  if not os.path.isfile(path):
    raise UsageError(f'--{what}={spec}: no such file {path}')
  module_spec = importlib.util.spec_from_file_location(f'_{what}_file', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UsageError(f'{path}:{e.lineno}: syntax error: {e.msg}') from None
  except Exception as e:  # A user's file: any error it raises is reported where it happened.
    raise UsageError(f'{_file_line(path, e.__traceback__)}: {type(e).__name__}: {one_line(e)}') from None
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise UsageError(f'{path} has no get_config() function; a {what} file defines one returning a ConfigDict')
  try:
    config = get_config(variant) if variant else get_config()
  except Exception as e:
    raise UsageError(f'{_file_line(path, e.__traceback__)}: {type(e).__name__}: {one_line(e)}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(f'{path}: get_config() returned a {type(config).__name__}; allowed: an ml_collections.ConfigDict')
  return config


def field_line(spec: str, field: str) -> str:
  """'path:line' where the config file of `spec` names the last part of `field` (for an
  error in a field the file set), else 'path'."""
  path = spec.partition(':')[0]
  name = field.rsplit('.', 1)[-1]
  try:
    with open(path) as f:
      for number, line in enumerate(f, 1):
        if re.search(rf'\b{re.escape(name)}\b', line):
          return f'{path}:{number}'
  except OSError:
    pass
  return path


def _take_flag(argv: list[str], name: str) -> str | None:
  """Removes `--name=value` and `--name value` from argv; the (last) value, else None."""
  value, i = None, 1
  while i < len(argv):
    if argv[i].startswith(f'--{name}='):
      value = argv.pop(i).split('=', 1)[1]
    elif argv[i] == f'--{name}' and i + 1 < len(argv):
      argv.pop(i)
      value = argv.pop(i)
    else:
      i += 1
  return value


def add_config_flag(flag_values: flags.FlagValues, argv: list[str], name: str, help_string: str) -> None:
  """Defines `--name` (a config file, 'path[:variant]', taken out of argv) and its
  `--name.field=value` overrides on `flag_values`, loading the file now (`load_config_file`)."""
  spec = _take_flag(argv, name)
  if spec is None:
    raise UsageError(f'--{name} is required ({help_string})')
  config = load_config_file(spec, name)
  config_flags.DEFINE_config_dict(name, config, help_string, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  # For errors in fields the file set (`field_line`): where it came from, and which fields
  # the command line overrode.
  flag_values[name].config_spec = spec
  flag_values[name].overridden = {a.split('=', 1)[0].removeprefix(f'--{name}.') for a in argv
                                  if a.startswith(f'--{name}.')}


def _override_error(argv: list[str], name: str, error: Exception) -> UsageError:
  """A one-line error for a `--name.field=value` override ml_collections refused."""
  message = one_line(error)
  unknown = re.match(r"'?([^';]+)'?; Did you mean \"?([^\"]+)\"? instead", message)
  bad = [a for a in argv if a.startswith(f'--{name}.')]
  if unknown:
    arg = next((a for a in bad if re.search(rf'\.{re.escape(unknown.group(1))}(=|$)', a)), f'--{name}...')
    return UsageError(f'{arg}: no such field; did you mean {unknown.group(2)!r}?')
  arg = next((a for a in bad if re.search(r"'([^']+)'", message) and re.search(r"'([^']+)'", message).group(1) in a),
             None)
  return UsageError(f'{arg + ": " if arg else ""}{message}')


def parse(argv: list[str], define: Callable[[flags.FlagValues, list[str]], None]) -> flags.FlagValues:
  """A fresh FlagValues with absl's logging flags and those `define(flag_values, argv)`
  adds, parsed from argv; UsageError with one line for anything wrong."""
  flag_values = flags.FlagValues()
  flag_values.append_flag_values(flags.FLAGS)  # --verbosity, --logtostderr, ...
  try:
    define(flag_values, argv)  # A config flag parses its overrides here already.
    rest = flag_values(argv)
  except OneLineError:
    raise
  except flags.IllegalFlagValueError as e:
    required = re.match(r'flag --(\w+)=None: Flag --\w+ must have a value other than None', one_line(e))
    raise UsageError(f'--{required.group(1)} is required' if required else one_line(e).removeprefix('flag ')) from None
  except flags.Error as e:
    raise UsageError(one_line(e)) from None
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections' refusal of an override.
    raise _override_error(argv, next((n for n in ('config', 'sweep') if n in flag_values), 'config'), e) from None
  if len(rest) > 1:
    raise UsageError(f'unexpected argument {rest[1]!r}; flags are written --name=value')
  for flag in flag_values:
    if flag_values[flag].value is None and getattr(flag_values[flag], 'required', False):
      raise UsageError(f'--{flag} is required')
  flags.FLAGS.mark_as_parsed()  # absl logging then needs no parsing of its own.
  return flag_values


def _disk_error(error: BaseException) -> OSError | None:
  """The OSError (full disk, permission, read-only file system) in `error`'s chain, if any."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS,
                                                       errno.EPERM):
      return error
    error = error.__cause__ or error.__context__
  return None


def _stop_on_sigterm(*_):
  raise KeyboardInterrupt


def _take_stop_signals() -> None:
  """Ctrl-C and SIGTERM stop the run (as KeyboardInterrupt), whatever this process
  inherited: a parent may have left SIGINT blocked or ignored (masks and ignored signals
  survive exec), and the run would then ignore Ctrl-C."""
  signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
  signal.signal(signal.SIGINT, signal.default_int_handler)
  signal.signal(signal.SIGTERM, _stop_on_sigterm)


def run(main: Callable[[flags.FlagValues], object], define: Callable[[flags.FlagValues, list[str]], None],
        argv: list[str] | None = None, resumable: bool = True) -> None:
  """Parses argv (default: sys.argv) with `define`, runs `main(flag_values)` and exits
  with one line on any failure a user can cause or meet (see the module docstring)."""
  argv = list(sys.argv if argv is None else argv)
  resume = '; run the same command again to resume' if resumable else ''
  try:
    flag_values = parse(argv, define)
    absl_logging.use_absl_handler()
    _take_stop_signals()
    main(flag_values)
  except OneLineError as e:
    _exit(e.status, f'{e.prefix}: {e}')
  except KeyboardInterrupt:
    # Work cut short (an Orbax save, say) leaves threads that fail noisily during interpreter
    # shutdown; everything on disk is already safe to resume from (files are written
    # atomically), so the process ends here, as a SIGKILL would, after its one line.
    print(f'interrupted{resume}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)
  except Exception as e:
    disk = _disk_error(e)
    if disk is not None:
      what = 'disk full' if disk.errno in (errno.ENOSPC, errno.EDQUOT) else 'cannot write'
      _exit(1, f'{what}: {disk.filename or ""}: {disk.strerror}{resume}')
    if 'RESOURCE_EXHAUSTED' in str(e):  # XLA's out-of-memory error, past the config's memory estimate.
      _exit(1, f'out of memory: {str(e).splitlines()[0]}; use a smaller model, batch or num_seeds')
    raise


def _exit(status: int, message: str) -> None:
  print(message, file=sys.stderr)
  sys.exit(status)
