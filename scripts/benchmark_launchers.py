"""How long a sweep takes through each launcher, side by side on this machine.

    python scripts/benchmark_launchers.py                      # quick sweep: 1 worker vs the default
    python scripts/benchmark_launchers.py --small_cells=16     # and 16 small cells: local vs a local Ray cluster

Each arm is the user's command, `python -m pe_research.sweep ... --launcher=... --workers=...`,
run as a fresh process on a fresh workdir and timed from start to exit (imports, compiling,
training, evaluating and the report); arms alternate over `--repeats`. Prints a Markdown
table with the machine it ran on (docs/performance.md keeps the results).
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_SWEEP = '''
import os
from pe_research import sweep

def get_config():
  base = sweep.load_config({default!r})
  base.train.update(steps=200, checkpoint_every=200)
  base.eval.update(max_length=24)
  return sweep.make(base, {{'encoding.name': ['none', 'sinusoidal', 'rope', 'alibi'], 'seed': {seeds!r}}})
'''


def timed(args: list[str], workdir: str) -> float:
  start = time.perf_counter()
  done = subprocess.run([sys.executable, '-m', 'pe_research.sweep', *args, f'--workdir={workdir}'], cwd=ROOT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if done.returncode:
    sys.exit(f'{" ".join(args)} failed: {done.stderr.strip().splitlines()[-1]}')
  return time.perf_counter() - start


def machine() -> str:
  model = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
  return f'{model}, {len(os.sched_getaffinity(0))} cores'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--small_cells', type=int, default=0, help='also time this many small cells (a multiple of 4)')
  parser.add_argument('--repeats', type=int, default=1, help='runs of each arm, alternating')
  parser.add_argument('--no_quick', action='store_true', help='skip the quick sweep')
  parser.add_argument('--keep', default='', help='keep the arms\' workdirs (and reports) under this directory')
  args = parser.parse_args()
  if args.small_cells % 4 or args.small_cells < 0 or args.repeats < 1:
    parser.error('--small_cells must be a multiple of 4 (4 encodings x seeds), --repeats at least 1')
  arms = []
  if not args.no_quick:
    quick = ['--sweep=configs/sweeps/quick.py']
    arms += [('quick sweep, 4 cells', 'local, 1 worker (in process)', [*quick, '--workers=1']),
             ('quick sweep, 4 cells', 'local, default (one worker per core)', quick),
             ('quick sweep, 4 cells', 'ray, local cluster, 1 CPU a cell', [*quick, '--launcher=ray'])]
  with tempfile.TemporaryDirectory() as scratch:
    if args.small_cells:
      path = os.path.join(scratch, 'small.py')
      with open(path, 'w') as f:
        f.write(SMALL_SWEEP.format(default=os.path.join(ROOT, 'configs', 'default.py'),
                                   seeds=list(range(args.small_cells // 4))))
      what = f'{args.small_cells} small cells (200 steps)'
      arms += [(what, 'local, 1 worker (in process)', [f'--sweep={path}', '--workers=1']),
               (what, 'local, default (one worker per core)', [f'--sweep={path}']),
               (what, 'ray, local cluster, 1 CPU a cell', [f'--sweep={path}', '--launcher=ray'])]
    times = {i: [] for i in range(len(arms))}
    for repeat in range(args.repeats):
      for i, (_, _, arm_args) in enumerate(arms):
        times[i].append(timed(arm_args, os.path.join(args.keep or scratch, f'arm{i}_{repeat}')))
  print(f'Machine: {machine()}; Python {platform.python_version()}\n')
  print('| sweep | launcher | wall time (s) |\n|---|---|---|')
  for i, (what, launcher, _) in enumerate(arms):
    print(f"| {what} | {launcher} | {', '.join(f'{t:.0f}' for t in times[i])} |")


if __name__ == '__main__':
  main()
