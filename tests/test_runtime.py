"""The launchers' CPU runtime defaults (pe_research/runtime.py): when the process re-executes
itself with an allocator preloaded, with what, and that it can be turned off."""

import os
import subprocess
import sys

import pytest

from pe_research import runtime
from tests.conftest import ROOT

TCMALLOC = '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4'
JEMALLOC_CONF = 'dirty_decay_ms:-1,muzzy_decay_ms:-1'


def tcmalloc():
  return TCMALLOC, {}


def nothing():
  return None


def not_called():
  raise AssertionError('looked for an allocator')


def test_reexec_preloads_the_allocator_once():
  assert runtime.reexec_environment({}, 'linux', tcmalloc) == {'LD_PRELOAD': TCMALLOC, runtime.MARKER: '1'}
  # The re-executed process carries the marker: it never re-executes again.
  assert runtime.reexec_environment({runtime.MARKER: '1'}, 'linux', not_called) is None


def test_reexec_keeps_other_preloads_and_the_users_malloc_conf():
  env = runtime.reexec_environment({'LD_PRELOAD': '/opt/libfoo.so'}, 'linux', tcmalloc)
  assert env['LD_PRELOAD'] == f'{TCMALLOC}:/opt/libfoo.so'
  jemalloc = lambda: ('/usr/lib/libjemalloc.so.2', {'MALLOC_CONF': JEMALLOC_CONF})  # noqa: E731
  assert runtime.reexec_environment({}, 'linux', jemalloc)['MALLOC_CONF'] == JEMALLOC_CONF
  assert 'MALLOC_CONF' not in runtime.reexec_environment({'MALLOC_CONF': 'narenas:1'}, 'linux', jemalloc)


@pytest.mark.parametrize('environ, platform', [
    ({runtime.SWITCH: '0'}, 'linux'),
    ({runtime.SWITCH: 'false'}, 'linux'),
    ({}, 'darwin'),
    ({}, 'win32'),
    ({'LD_PRELOAD': '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'}, 'linux'),
    ({'LD_PRELOAD': '/opt/libfoo.so /usr/local/lib/libmimalloc.so'}, 'linux'),
])
def test_no_reexec_when_off_elsewhere_or_an_allocator_is_preloaded(environ, platform):
  assert runtime.reexec_environment(environ, platform, not_called) is None


def test_no_reexec_without_an_allocator():
  assert runtime.reexec_environment({}, 'linux', nothing) is None


def test_find_allocator_prefers_tcmalloc_then_jemalloc_then_the_linker():
  assert runtime.find_allocator(exists=lambda path: True) == (TCMALLOC, {})
  path, env = runtime.find_allocator(exists=lambda path: 'jemalloc' in path, find_library=not_called)
  assert path.endswith('/libjemalloc.so.2') and env == {'MALLOC_CONF': JEMALLOC_CONF}
  linker = {'jemalloc': 'libjemalloc.so.2'}.get
  assert runtime.find_allocator(exists=lambda path: False, find_library=linker)[0] == 'libjemalloc.so.2'
  assert runtime.find_allocator(exists=lambda path: False, find_library=lambda name: None) is None


def test_relaunch_argv_runs_the_same_module_or_script():
  argv = ['/work/pe_research/main.py', '--config=configs/default.py', '--workdir=runs/x']
  assert runtime.relaunch_argv('pe_research.main', argv, '/venv/bin/python') == [
      '/venv/bin/python', '-m', 'pe_research.main', '--config=configs/default.py', '--workdir=runs/x']
  assert runtime.relaunch_argv(None, argv, '/venv/bin/python') == ['/venv/bin/python', *argv]


@pytest.fixture
def environ():
  """os.environ, restored after the test."""
  saved = dict(os.environ)
  yield os.environ
  os.environ.clear()
  os.environ.update(saved)


def test_configure_does_nothing_when_turned_off(environ, monkeypatch):
  environ[runtime.SWITCH] = '0'
  environ.pop(runtime.MARKER, None)
  before = dict(environ)
  monkeypatch.setattr(runtime, 'find_allocator', not_called)
  monkeypatch.setattr(os, 'execv', lambda *args: pytest.fail('re-executed'))
  runtime.configure()
  assert dict(environ) == before


def test_configure_reexecutes_the_launcher_module(environ, monkeypatch):
  for name in (runtime.SWITCH, runtime.MARKER, 'LD_PRELOAD'):
    environ.pop(name, None)
  calls = []
  monkeypatch.setattr(sys, 'platform', 'linux')
  monkeypatch.setattr(runtime, 'find_allocator', tcmalloc)
  monkeypatch.setattr(sys.modules['__main__'], '__spec__', type('Spec', (), {'name': 'pe_research.main'})())
  monkeypatch.setattr(sys, 'argv', ['/somewhere/pe_research/main.py', '--workdir=runs/x'])
  monkeypatch.setattr(os, 'execv', lambda path, argv: calls.append((path, argv, dict(os.environ))))
  runtime.configure()
  (path, argv, env), = calls
  assert path == sys.executable and argv == [sys.executable, '-m', 'pe_research.main', '--workdir=runs/x']
  assert env['LD_PRELOAD'] == TCMALLOC and env[runtime.MARKER] == '1'


def test_a_launcher_restarts_once_with_the_allocator_loaded(tmp_path):
  """End to end, in a subprocess: a module that calls configure() as the launchers do."""
  (tmp_path / 'launcher.py').write_text(
      'import os\n'
      'from pe_research import runtime\n'
      'runtime.configure()\n'
      "maps = open('/proc/self/maps').read() if os.path.exists('/proc/self/maps') else ''\n"
      "print(os.environ.get(runtime.MARKER), 'malloc' in maps)\n"
  )
  env = {k: v for k, v in os.environ.items() if k not in (runtime.SWITCH, runtime.MARKER, 'LD_PRELOAD')}
  env['PYTHONPATH'] = os.pathsep.join([ROOT, str(tmp_path)])
  result = subprocess.run([sys.executable, '-m', 'launcher'], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=30, check=True)
  marker, loaded = result.stdout.split()
  expected = sys.platform.startswith('linux') and runtime.find_allocator() is not None
  assert (marker == '1', loaded == 'True') == (expected, expected)
  off = subprocess.run([sys.executable, '-m', 'launcher'], cwd=tmp_path, env={**env, runtime.SWITCH: '0'},
                       capture_output=True, text=True, timeout=30, check=True)
  assert off.stdout.split() == ['None', 'False']
