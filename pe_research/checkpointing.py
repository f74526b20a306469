"""Checkpoints of a run, by Orbax: everything needed to continue training exactly.

A checkpoint at step s holds the `TrainState` (step, parameters, optimizer state, each with
a leading seed axis) and the per-seed data keys. The data stream is a pure function of
(data key, step), so training resumed from it is bit-identical to training that never
stopped. Typed PRNG keys are not serializable: their raw `jax.random.key_data` is saved and
wrapped back on restore. Orbax writes a step into a temporary directory and renames it once
complete, so a killed save never leaves a checkpoint that `latest_step` would pick; leftover
temporary directories are removed when a run opens its checkpoints.
"""

import logging
import os
import shutil

import jax
import orbax.checkpoint as ocp

DIRECTORY = 'checkpoints'


class _OrbaxInfoFilter(logging.Filter):
  """Drops Orbax's INFO records (a dozen lines per save) from the absl log it shares with
  the runner; its warnings and errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


logging.getLogger('absl').addFilter(_OrbaxInfoFilter())


class Checkpoints:
  """The checkpoints of one run directory (only the latest is kept). Use as a context
  manager, or call `close`."""

  def __init__(self, workdir: str):
    directory = os.path.join(os.path.abspath(workdir), DIRECTORY)
    if os.path.isdir(directory):
      # Partial saves of a killed process. (Orbax's own `cleanup_tmp_directories` runs in a
      # thread that `close` does not join, and can fail at interpreter exit.)
      for tmp in ocp.utils.tmp_checkpoints(directory):
        shutil.rmtree(tmp.get())
    # Synchronous saves: `save` returns with the step committed.
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state, data_keys: jax.Array) -> None:
    """Saves `state` (a TrainState, seeds leading) and the typed `data_keys` at
    `state.step`; returns once the checkpoint is committed to disk."""
    tree = {'state': state, 'data_keys': jax.random.key_data(data_keys)}
    self._manager.save(int(state.step[0]), args=ocp.args.StandardSave(tree))

  def restore(self, state, data_keys: jax.Array):
    """(state, data_keys) of the latest checkpoint, with the structure, dtypes and devices
    of the given fresh ones; returns those unchanged when there is no checkpoint."""
    step = self._manager.latest_step()
    if step is None:
      return state, data_keys
    target = {'state': state, 'data_keys': jax.random.key_data(data_keys)}
    tree = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return tree['state'], jax.random.wrap_key_data(tree['data_keys'], impl=jax.random.key_impl(data_keys))

  def read_latest(self) -> tuple[int, dict]:
    """(step, tree of arrays) of the latest checkpoint, read without a target structure:
    tree['state'] holds step, params and opt_state as nested dicts. For analysis."""
    step = self._manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self._manager.directory}')
    return step, self._manager.restore(step, args=ocp.args.StandardRestore())

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
