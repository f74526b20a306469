"""CPU runtime defaults of the launchers, applied before JAX starts.

`python -m pe_research.main` and `python -m pe_research.sweep` call `configure()` before they
import anything that imports JAX. It sets one thing, the memory allocator: on Linux, when
LD_PRELOAD names no allocator, the launcher re-executes itself once (same process id, same
arguments) with LD_PRELOAD=tcmalloc (Debian/Ubuntu: `apt-get install libtcmalloc-minimal4`),
or jemalloc (`libjemalloc2`) with MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 when only
that is installed. Without either library glibc's malloc is kept (logged at info level).

Why: XLA:CPU takes each compiled call's temporary buffers from malloc. glibc hands large
blocks back to the kernel when they are freed, so every call page-faults its buffers in again
(zeroed pages, system time); tcmalloc and jemalloc keep them, which made short calls faster
and long ones no slower (docs/performance.md, "CPU runtime defaults", has the measurements
and the XLA flags that were tried and not set).

Overrides: PE_RESEARCH_RUNTIME_DEFAULTS=0 turns all of this off; an LD_PRELOAD that already
names an allocator (any library with 'malloc' in its name) is kept as it is.
"""

import ctypes.util
import os
import sys

from absl import logging

# Set to 0 (or false, no, off) to keep the runtime as it is.
SWITCH = 'PE_RESEARCH_RUNTIME_DEFAULTS'
# Set in the re-executed process, so that it never re-executes again.
MARKER = 'PE_RESEARCH_RUNTIME_REEXEC'

_MULTIARCH = ('x86_64-linux-gnu', 'aarch64-linux-gnu')
_SEARCH_DIRS = (*(f'/usr/lib/{arch}' for arch in _MULTIARCH), '/usr/lib64', '/usr/lib', '/usr/local/lib')
# Most preferred first: (ctypes.util.find_library name, file names looked for in
# _SEARCH_DIRS, environment defaults it runs with).
_ALLOCATORS = (
    ('tcmalloc_minimal', ('libtcmalloc_minimal.so.4', 'libtcmalloc.so.4'), {}),
    ('jemalloc', ('libjemalloc.so.2',), {'MALLOC_CONF': 'dirty_decay_ms:-1,muzzy_decay_ms:-1'}),
)


def enabled(environ) -> bool:
  """False when SWITCH is set to 0, false, no or off."""
  return environ.get(SWITCH, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def find_allocator(exists=os.path.isfile, find_library=ctypes.util.find_library) -> tuple[str, dict] | None:
  """(library to preload, environment defaults it runs with) of the most preferred allocator
  installed at a standard path, else known to the dynamic linker; None if there is none."""
  for _, files, env in _ALLOCATORS:
    for path in (os.path.join(directory, file) for file in files for directory in _SEARCH_DIRS):
      if exists(path):
        return path, env
  for name, _, env in _ALLOCATORS:
    if found := find_library(name):
      return found, env
  return None


def names_allocator(ld_preload: str) -> bool:
  """Whether LD_PRELOAD (colon- or space-separated) already preloads an allocator."""
  return any('malloc' in os.path.basename(lib) for lib in ld_preload.replace(':', ' ').split())


def reexec_environment(environ, platform: str, find=None) -> dict | None:
  """The variables to set before re-executing with an allocator preloaded, or None to go on
  as is: when turned off, not on Linux, already re-executed, LD_PRELOAD names an allocator,
  or `find()` finds none."""
  if not enabled(environ) or not platform.startswith('linux') or MARKER in environ:
    return None
  preload = environ.get('LD_PRELOAD', '')
  if names_allocator(preload):
    return None
  allocator = (find or find_allocator)()
  if allocator is None:
    logging.info('no tcmalloc or jemalloc found; keeping glibc malloc (apt-get install libtcmalloc-minimal4)')
    return None
  library, defaults = allocator
  updates = {name: value for name, value in defaults.items() if name not in environ}
  updates['LD_PRELOAD'] = f'{library}:{preload}' if preload else library
  updates[MARKER] = '1'
  return updates


def relaunch_argv(main_module: str | None, argv: list[str], executable: str) -> list[str]:
  """The command line that starts this launcher again: `python -m <module> args` for a
  launcher run with -m (whose argv[0] is then the module's file), else `python argv`."""
  if main_module:
    return [executable, '-m', main_module, *argv[1:]]
  return [executable, *argv]


def configure() -> None:
  """Applies the defaults above. Call it first thing in a launcher, before JAX is imported:
  it may replace the process (os.execv) and then never returns."""
  updates = reexec_environment(os.environ, sys.platform)
  if updates is None:
    return
  spec = getattr(sys.modules['__main__'], '__spec__', None)
  if spec is None and not os.path.isfile(sys.argv[0]):  # python -c, an interactive session
    return
  argv = relaunch_argv(spec.name if spec is not None else None, sys.argv, sys.executable)
  saved = {name: os.environ.get(name) for name in updates}
  os.environ.update(updates)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execv(sys.executable, argv)
  except OSError as e:  # Go on with glibc malloc.
    logging.warning('could not restart with LD_PRELOAD=%s: %s', updates['LD_PRELOAD'], e)
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value
