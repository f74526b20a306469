"""One process per workdir: an exclusive lock on `<workdir>/.lock`.

Two processes writing one run would interleave their train.jsonl lines and race Orbax's
checkpoint renames; so a run (and a sweep, on its root) holds `fcntl.flock` on the lock file
while it works. The kernel releases the lock when its process dies, however it dies, so a
lock left by a killed process is simply taken over. A second process stops at once with one
line naming the holder (its pid, host, command and start time, which the holder writes into
the file). In a multi-host run only process 0 locks (it is the one that writes).
"""

import contextlib
import fcntl
import os
import socket
import sys
import time

import jax

from pe_research.cli import OneLineError, UsageError

LOCK_FILE = '.lock'


class Busy(OneLineError):
  """Another live process holds the workdir."""

  prefix = 'workdir busy'


def make_workdir(workdir: str) -> None:
  """Creates `workdir` (and its parents); UsageError naming it when it cannot be one."""
  if not workdir:
    raise UsageError('--workdir is empty; allowed: a directory path, e.g. runs/demo')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UsageError(f'--workdir={workdir} is a file; allowed: a directory, new or holding runs of pe_research')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UsageError(f'--workdir={workdir} cannot be created: {e.strerror} ({e.filename})') from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise UsageError(f'--workdir={workdir} is not writable')


@contextlib.contextmanager
def hold(workdir: str):
  """Creates `workdir` if needed and holds its lock for the `with` block; Busy if another
  process holds it. In a multi-host run the other processes neither create nor lock it
  (they write nothing but their parts of a checkpoint, see `pe_research.checkpointing`)."""
  if jax.process_index() != 0:
    yield
    return
  make_workdir(workdir)
  path = os.path.join(workdir, LOCK_FILE)
  with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), 'r+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = f.read().strip() or 'another process'
      raise Busy(f'{workdir} is in use by {holder}; wait for it to finish, or use another --workdir') from None
    f.seek(0)
    f.truncate()
    started = time.strftime('%Y-%m-%d %H:%M:%S')
    f.write(f'process {os.getpid()} on {socket.gethostname()} (started {started}: {" ".join(sys.argv)})\n')
    f.flush()
    try:
      yield
    finally:
      f.seek(0)
      f.truncate()  # Released: no stale holder to report. The flock goes with the file.
