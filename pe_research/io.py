"""Crash-safe result files: whole-file writes by temp file + rename, and JSONL appends of
complete lines. In a multi-host run only process 0 writes.

Readers survive what a crash or a stray edit leaves: `read_jsonl` skips a torn last line
and any line that is not JSON (with a warning naming the file), and `read_json` raises
`Unreadable` naming the file. Non-finite numbers are written as null, so every file is
strict JSON. Files get the permissions of the user's umask (0644 by default), not the
0600 of the temporary file they are written through.
"""

import json
import math
import os
import tempfile

import jax
from absl import logging

_UMASK = os.umask(0)
os.umask(_UMASK)


class Unreadable(ValueError):
  """A result file that exists but does not hold what it should; the message names it."""


def is_writer() -> bool:
  """Whether this process writes the run's files: process 0 of a multi-host run (the
  others compute the same results; see `pe_research.training.sharding`)."""
  return jax.process_index() == 0


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` so that readers see the old or the new file, never a partial
  one (a temporary file in the same directory, fsynced, then renamed over `path`)."""
  if not is_writer():
    return
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile('w', dir=directory, delete=False, suffix='.tmp') as f:
    try:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
      os.fchmod(f.fileno(), 0o666 & ~_UMASK)
    except BaseException:
      os.remove(f.name)  # A full disk leaves no temporary file behind.
      raise
  os.replace(f.name, path)


def finite(obj):
  """`obj` with every non-finite float (NaN, inf) replaced by None, recursively."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [finite(v) for v in obj]
  return obj


def _dumps(obj, **kwargs) -> str:
  return json.dumps(finite(obj), allow_nan=False, sort_keys=True, **kwargs)


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as JSON to `path`, atomically."""
  write_text_atomic(path, _dumps(obj, indent=2))


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
  """Replaces `path` by one JSON line per record, atomically."""
  write_text_atomic(path, _lines(records))


def append_jsonl(path: str, records: list[dict]) -> None:
  """Appends one JSON line per record, flushed and fsynced."""
  if not is_writer():
    return
  with open(path, 'a') as f:
    f.write(_lines(records))
    f.flush()
    os.fsync(f.fileno())


def read_json(path: str):
  """The JSON object in `path`, or None if there is no such file; `Unreadable` if it is not
  valid JSON."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise Unreadable(f'{path} is not valid JSON ({e})') from None


def read_jsonl(path: str) -> list[dict]:
  """The complete records of a JSONL file: a torn final line (a crash) and any line that is
  not a JSON object are skipped, with a warning naming the file for the latter."""
  if not os.path.exists(path):
    return []
  records, bad = [], 0
  with open(path, errors='replace') as f:
    for line in f:
      if not line.endswith('\n') or not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        record = None
      if isinstance(record, dict):
        records.append(record)
      else:
        bad += 1
  if bad:
    logging.warning('%s: skipped %d line(s) that are not JSON records', path, bad)
  return records


def _lines(records: list[dict]) -> str:
  return ''.join(_dumps(r) + '\n' for r in records)
