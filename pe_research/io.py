"""Crash-safe result files: whole-file writes by temp file + rename, and JSONL appends of
complete lines (a reader skips a torn last line, see `read_jsonl`; a resumed run rewrites
the file without it, see `write_jsonl_atomic`). In a multi-host run only process 0 writes."""

import json
import os
import tempfile

import jax


def _writer() -> bool:
  return jax.process_index() == 0


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` so that readers see the old or the new file, never a partial
  one (a temporary file in the same directory, fsynced, then renamed over `path`)."""
  if not _writer():
    return
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile('w', dir=directory, delete=False, suffix='.tmp') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(f.name, path)


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as JSON to `path`, atomically."""
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
  """Replaces `path` by one JSON line per record, atomically."""
  write_text_atomic(path, _lines(records))


def append_jsonl(path: str, records: list[dict]) -> None:
  """Appends one JSON line per record, flushed and fsynced."""
  if not _writer():
    return
  with open(path, 'a') as f:
    f.write(_lines(records))
    f.flush()
    os.fsync(f.fileno())


def read_json(path: str):
  """The JSON object in `path`, or None if there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_jsonl(path: str) -> list[dict]:
  """The complete records of a JSONL file (a torn final line from a crash is ignored)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith('\n') and line.strip()]


def _lines(records: list[dict]) -> str:
  return ''.join(json.dumps(r, sort_keys=True) + '\n' for r in records)
