"""Keeps a sweep's results: copies the record files of every finished cell to a directory
that is committed, and back.

    python scripts/keep_records.py runs/deletang2023 docs/results/deletang2023/runs
    python scripts/keep_records.py docs/results/deletang2023/runs runs/deletang2023

A finished cell is config.json, summary.json and a complete eval.jsonl (what
`pe_research.report` reads, a few kB); the checkpoints and train.jsonl stay behind. The
copies are what docs/results.md's tables are made from, and copied back into a sweep's
workdir they count as finished (`experiment.finished_summary`), so the sweep skips them: a
reproduction too long for one sitting resumes in the next from its committed records.
Cells whose files are broken or whose run has not finished are left out, and listed.
"""

import os
import shutil
import sys

from pe_research import experiment, report

RECORDS = (experiment.CONFIG, experiment.SUMMARY, experiment.EVAL)


def keep(source: str, dest: str) -> tuple[list[str], list[str]]:
  """Copies the records of each finished cell under `source` to the same relative directory
  under `dest` (each file atomically); returns (cells copied, cells left out with why)."""
  finished, failed, unfinished = report.find_runs(source)
  copied, left_out = [], [f'{os.path.relpath(d, source)}: not finished' for d in failed + unfinished]
  for run_dir in finished:
    name = os.path.relpath(run_dir, source)
    try:
      report.load_run(run_dir)
    except report.Broken as e:
      left_out.append(f'{name}: {e}')
      continue
    os.makedirs(os.path.join(dest, name), exist_ok=True)
    for file in RECORDS:
      target = os.path.join(dest, name, file)
      shutil.copyfile(os.path.join(run_dir, file), f'{target}.tmp')
      os.replace(f'{target}.tmp', target)
    copied.append(name)
  return copied, left_out


if __name__ == '__main__':
  if len(sys.argv) != 3 or not os.path.isdir(sys.argv[1]):
    sys.exit('usage: python scripts/keep_records.py SOURCE_DIR DEST_DIR (SOURCE_DIR: an existing sweep or records directory)')
  copied, left_out = keep(sys.argv[1], sys.argv[2])
  print(f'{len(copied)} finished cell(s) copied to {sys.argv[2]}')
  for line in left_out:
    print(f'left out: {line}')
