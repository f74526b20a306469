"""Crash-safe result files: whole-file writes by temp file + rename, and JSONL appends of
complete lines (a reader skips a torn last line, see `read_jsonl`)."""

import json
import os
import tempfile


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as JSON to `path` so that readers see the old or the new file, never a
  partial one."""
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile('w', dir=directory, delete=False, suffix='.tmp') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(f.name, path)


def append_jsonl(path: str, records: list[dict]) -> None:
  """Appends one JSON line per record, flushed and fsynced."""
  with open(path, 'a') as f:
    f.write(''.join(json.dumps(r, sort_keys=True) + '\n' for r in records))
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str) -> list[dict]:
  """The complete records of a JSONL file (a torn final line from a crash is ignored)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith('\n') and line.strip()]
