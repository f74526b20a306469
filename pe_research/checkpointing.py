"""Checkpoints of a run, by Orbax: everything needed to continue training exactly.

A checkpoint at step s holds the `TrainState` (step, parameters, optimizer state, each with
a leading seed axis) and the per-seed data keys. The data stream is a pure function of
(data key, step), so training resumed from it is bit-identical to training that never
stopped. Typed PRNG keys are not serializable: their raw `jax.random.key_data` is saved and
wrapped back on restore. Orbax writes a step into a temporary directory and renames it once
complete, so a killed save never leaves a checkpoint that `latest_step` would pick; leftover
temporary directories are removed when a run opens its checkpoints.

The last two checkpoints are kept. One that cannot be restored (a damaged file, an emptied
directory) is moved aside to `checkpoints-unreadable/` with a warning and the one before it
is restored; with none left, training starts over from step 0 (the data stream being a pure
function of the keys, it ends where an unbroken run would have).

In a multi-host run Orbax saves collectively: each process writes the parts of the arrays
its devices hold (`<step>/default/ocdbt.process_<i>`, `array_metadatas/process_<i>`),
process 0 the rest and the final rename, and on restore each reads the parts it holds. So
the checkpoints are the one thing the other processes write; process 0 alone removes
leftovers and sets unreadable checkpoints aside (tests/test_multihost.py).
"""

import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from pe_research import io

DIRECTORY = 'checkpoints'
# Where checkpoints that cannot be restored are moved, for a look.
UNREADABLE = 'checkpoints-unreadable'
# Checkpoints kept: the newest and one to fall back on.
KEEP = 2


class _OrbaxInfoFilter(logging.Filter):
  """Drops Orbax's INFO records (a dozen lines per save) from the absl log it shares with
  the runner; its warnings and errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


logging.getLogger('absl').addFilter(_OrbaxInfoFilter())


class Checkpoints:
  """The checkpoints of one run directory (the last `KEEP`). Use as a context manager, or
  call `close`."""

  def __init__(self, workdir: str):
    self._workdir = os.path.abspath(workdir)
    directory = os.path.join(self._workdir, DIRECTORY)
    if io.is_writer() and os.path.isdir(directory):
      # Partial saves of a killed process. (Orbax's own `cleanup_tmp_directories` runs in a
      # thread that `close` does not join, and can fail at interpreter exit.)
      for tmp in ocp.utils.tmp_checkpoints(directory):
        shutil.rmtree(tmp.get())
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    # Synchronous saves: `save` returns with the step committed.
    return ocp.CheckpointManager(
        os.path.join(self._workdir, DIRECTORY),
        options=ocp.CheckpointManagerOptions(max_to_keep=KEEP, enable_async_checkpointing=False),
        item_handlers=ocp.StandardCheckpointHandler(),  # So that `item_metadata` can read shapes.
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state, data_keys: jax.Array) -> None:
    """Saves `state` (a TrainState, seeds leading) and the typed `data_keys` at
    `state.step`; returns once the checkpoint is committed to disk."""
    tree = {'state': state, 'data_keys': jax.random.key_data(data_keys)}
    self._manager.save(int(state.step[0]), args=ocp.args.StandardSave(tree))

  def restore(self, state, data_keys: jax.Array):
    """(state, data_keys) of the latest checkpoint that can be restored, with the structure,
    dtypes and devices of the given fresh ones; returns those unchanged when there is none.
    Checkpoints that fail are moved to UNREADABLE, with a warning."""
    target = {'state': state, 'data_keys': jax.random.key_data(data_keys)}
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        tree = self._manager.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # Orbax, tensorstore and JSON errors alike: a damaged checkpoint.
        self._set_aside(step, e)
        continue
      return tree['state'], jax.random.wrap_key_data(tree['data_keys'], impl=jax.random.key_impl(data_keys))
    if os.path.isdir(os.path.join(self._workdir, UNREADABLE)):
      logging.getLogger('absl').warning('no readable checkpoint in %s: training starts over from step 0',
                                        self._workdir)
    return state, data_keys

  def _set_aside(self, step: int, error: Exception) -> None:
    """Moves the checkpoint of `step` out of Orbax's sight, into UNREADABLE."""
    aside = os.path.join(self._workdir, UNREADABLE, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    if io.is_writer():
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      os.replace(os.path.join(self._workdir, DIRECTORY, str(step)), aside)
    if jax.process_count() > 1:  # The others look again only once it is gone.
      multihost_utils.sync_global_devices(f'checkpoint {step} set aside')
    # A fresh manager: one that read a damaged step can keep a wrong idea of its items.
    self._manager.close()
    self._manager = self._open()
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    logging.getLogger('absl').warning('checkpoint at step %d of %s cannot be restored (%s); moved to %s',
                                      step, self._workdir, first_line, aside)

  def read_latest(self) -> tuple[int, dict]:
    """(step, tree of arrays) of the latest checkpoint, read without a target structure:
    tree['state'] holds step, params and opt_state as nested dicts. For analysis.

    Every array is read whole onto this process's first device, whatever devices saved it
    (Orbax would otherwise look for the devices of a multi-host run)."""
    step = self._manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self._manager.directory}')
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=here),
                          self._manager.item_metadata(step))
    return step, self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
