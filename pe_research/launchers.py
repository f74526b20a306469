"""Launchers: where a sweep's cells run. A launcher only places cells; what a cell does is the
same wherever it runs.

    python -m pe_research.sweep --sweep=configs/sweeps/quick.py --workdir=runs/quick                  # local
    python -m pe_research.sweep ... --launcher=local --workers=4
    python -m pe_research.sweep ... --launcher=ray [--ray_address=HOST:PORT] [--cpus_per_cell=1 --gpus_per_cell=0]
    python -m pe_research.sweep ... --launcher=slurm --slurm_partition=gpu --gpus_per_cell=1 --max_parallel=64

Every cell is `run_cell(config_json, cell_dir)`, which calls `experiment.run`: a finished
cell is not run again, an interrupted one resumes from its checkpoint, and a failure is
recorded in the cell's failed.json. So a cell can move between launchers, and rerunning a
sweep after any crash, kill or preemption finishes what is left.

  local  with one worker (`--workers=1`), the cells run one after another in this process.
         With N workers, N cells run at once, each in a process of its own (a fresh
         `python -m pe_research.launchers`, so a worker that dies takes no other cell with
         it; its cell is started once more, and resumes). Each worker gets its own share of
         the CPU cores (affinity, set before JAX starts, so XLA sizes its threads to it), or
         on a machine with GPUs its own GPU (`CUDA_VISIBLE_DEVICES`). The default,
         `--workers=0`, is one worker per GPU, else one per CPU core: on the 2-core CPUs
         two single-core processes were the fastest arrangement (docs/performance.md).
  ray    each cell is a Ray task with declared resources (`--cpus_per_cell`,
         `--gpus_per_cell`), on the cluster at `--ray_address`, or, given none, on a local
         Ray cluster started for the sweep. Needs `pip install -e '.[ray]'`.
  slurm  a SLURM job array through submitit: one job per cell (`--slurm_partition`,
         `--slurm_time_min`, `--gpus_per_cell`, `--cpus_per_cell`, at most `--max_parallel`
         at once); job logs in `<workdir>/slurm/`. A job the scheduler kills leaves its cell
         to resume when the sweep runs again. Needs `pip install -e '.[slurm]'`.

A cell's numbers depend on the cores its XLA threads use (float32 sums split differently):
it is reproducible bit for bit under one arrangement, not across them (docs/performance.md).

Ray and SLURM run cells on other machines: the workdir must be on storage every worker sees
(a shared filesystem). The sweep checks that before it places a cell, by a file the workers
must read back.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings

LAUNCHERS = ('local', 'ray', 'slurm')
# A cell whose worker process died (killed, out of memory) is started this many times more.
RESTARTS = 1
PROBE = '.launcher_probe'


class LauncherError(Exception):
  """A launcher that cannot place cells (a missing extra, an unreachable cluster, a workdir
  the workers do not see); the message is one line. `pe_research.sweep` raises it as a
  usage error."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """A cell to run: its name, its config as config.json holds it, its directory and steps."""

  name: str
  config_json: dict
  cell_dir: str
  steps: int


def run_cell(config, cell_dir: str, progress=None) -> tuple[str, str]:
  """Runs (or resumes) one cell of `config` (a ConfigDict, or the dict config.json holds):
  ('done', its scores) or ('failed', why). A failure after the run started is also in the
  cell's failed.json (`experiment.run`); `progress(step)` follows its training."""
  import ml_collections  # noqa: PLC0415  (JAX starts here, after a worker's placement)

  from pe_research import experiment  # noqa: PLC0415

  start = time.perf_counter()
  try:
    summary = experiment.run(ml_collections.ConfigDict(config), cell_dir, progress)
  except Exception as e:  # A failed cell is recorded; the sweep goes on.
    failed_json = os.path.join(cell_dir, experiment.FAILED)
    return 'failed', str(e) + ('' if isinstance(e, experiment.RunFailed) else f' (traceback in {failed_json})')
  return 'done', (f"in-distribution {summary['in_distribution_accuracy']:.3f}, "
                  f"unseen lengths {summary['unseen_lengths_accuracy']:.3f} ({time.perf_counter() - start:.0f} s)"
                  + (' position-blind' if summary.get('position_blind') else ''))


def gpu_count() -> int:
  """NVIDIA GPUs this process may use (`CUDA_VISIBLE_DEVICES`, else the driver's list),
  found without starting JAX, which would take GPU memory away from the workers."""
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return len([d for d in visible.split(',') if d.strip() and d.strip() != '-1'])
  try:
    return len(os.listdir('/proc/driver/nvidia/gpus'))
  except OSError:
    return 0


def placements(workers: int, cores: list[int], gpus: int) -> list[dict]:
  """What each of `workers` local workers gets: {'gpu': i} for one GPU each, or {'cores':
  [...]} for an equal share of `cores` (the first shares one more when they do not divide);
  `workers=0` means one per GPU, else one per core."""
  if workers == 0:
    workers = gpus or len(cores)
  if gpus:
    return [{'gpu': i % gpus} for i in range(workers)]
  share, extra = divmod(len(cores), workers)
  if share == 0:  # More workers than cores: they share them all.
    return [{'cores': cores} for _ in range(workers)]
  bounds = [0]
  for i in range(workers):
    bounds.append(bounds[-1] + share + (i < extra))
  return [{'cores': cores[a:b]} for a, b in zip(bounds, bounds[1:])]


def worker_command(cell_dir: str) -> list[str]:
  return [sys.executable, '-m', 'pe_research.launchers', cell_dir]


# A local worker's cores, which it pins itself to before JAX starts (a `preexec_fn` would
# run Python between fork and exec in a process whose JAX threads are running).
CORES = 'PE_RESEARCH_WORKER_CORES'


def worker_environment(placement: dict) -> dict:
  env = dict(os.environ)
  if 'gpu' in placement:
    env['CUDA_VISIBLE_DEVICES'] = str(placement['gpu'])
  if 'cores' in placement:
    env[CORES] = ','.join(map(str, placement['cores']))
  return env


class Local:
  """Cells on this machine: N worker processes (`in_process`: one worker, this process)."""

  def __init__(self, workers: int = 0):
    self.workers = workers

  def placements(self, num_cells: int) -> list[dict]:
    """Each worker's share of the machine for `num_cells` cells: no more workers than cells,
    so that fewer cells get more cores each."""
    cores, gpus = sorted(os.sched_getaffinity(0)), gpu_count()
    return placements(min(self.workers or gpus or len(cores), max(num_cells, 1)), cores, gpus)

  def in_process(self, num_cells: int) -> bool:
    """Whether `num_cells` cells run in this process: with one worker."""
    return len(self.placements(num_cells)) == 1

  def run(self, cells: list[Cell], report, workdir: str) -> dict[str, str]:
    """Runs `cells` in worker processes; `report(cell, status, line)` after each returns the
    status kept. Returns {name: status}."""
    slots = self.placements(len(cells))
    waiting = [(c, 0) for c in cells]
    running = {}  # slot -> (cell, starts, process)
    status = {}
    while waiting or running:
      for slot, placement in enumerate(slots):
        if slot not in running and waiting:
          cell, starts = waiting.pop(0)
          running[slot] = (cell, starts, self._start(cell, placement))
      time.sleep(0.2)
      for slot, (cell, starts, process) in list(running.items()):
        if process.poll() is None:
          continue
        del running[slot]
        process.stdout.seek(0)
        out = process.stdout.read()
        process.stdout.close()
        result = _result(out)
        if result is None and starts < RESTARTS:  # The worker died: its cell resumes once more.
          waiting.insert(0, (cell, starts + 1))
          report(cell, 'restarted', f'worker exited with status {process.returncode}; the cell resumes')
          continue
        status[cell.name] = report(cell, *(result or ('failed', f'worker exited with status {process.returncode}'
                                                                  f' {starts + 1} times: {_last_line(out)}')))
    return status

  @staticmethod
  def _start(cell: Cell, placement: dict) -> subprocess.Popen:
    # Its output goes to a file, read when it exits: a pipe could fill and stall it.
    output = tempfile.TemporaryFile('w+')
    process = subprocess.Popen(
        worker_command(cell.cell_dir), stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
        env=worker_environment(placement), text=True)
    process.stdin.write(json.dumps(cell.config_json))
    process.stdin.close()
    process.stdout = output
    return process


RESULT_PREFIX = 'pe_research cell: '


def _result(output: str) -> tuple[str, str] | None:
  """The (status, line) a worker printed last, None if it printed none (it died)."""
  for line in reversed(output.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return tuple(json.loads(line[len(RESULT_PREFIX):]))
  return None


def _last_line(output: str) -> str:
  lines = [line for line in output.splitlines() if line.strip()]
  return lines[-1][:300] if lines else 'no output'


def check_shared(workdir: str, read_elsewhere) -> None:
  """LauncherError unless a worker sees `workdir`: writes a token into it and asks
  `read_elsewhere(path)` (run where the cells run) to read it back."""
  token = uuid.uuid4().hex
  path = os.path.join(os.path.abspath(workdir), PROBE)
  with open(path, 'w') as f:
    f.write(token)
  try:
    seen = read_elsewhere(path)
  finally:
    os.remove(path)
  if seen != token:
    raise LauncherError(f'--workdir={workdir} is not visible to the workers (they read {seen!r} at {path}); '
                        'allowed: a directory on storage every worker mounts at the same path')


def read_file(path: str) -> str | None:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return None


def _import_extra(module: str, extra: str):
  try:
    return __import__(module)
  except ImportError:
    raise LauncherError(f"--launcher={extra} needs {module}: pip install -e '.[{extra}]'") from None


class Ray:
  """Cells as Ray tasks on a Ray cluster (a local one started for the sweep when no address
  is given)."""

  def __init__(self, address: str = '', cpus_per_cell: float = 1, gpus_per_cell: float = 0):
    self.ray = _import_extra('ray', 'ray')
    self.address, self.resources = address, {'num_cpus': cpus_per_cell, 'num_gpus': gpus_per_cell}

  def run(self, cells: list[Cell], report, workdir: str) -> dict[str, str]:
    ray = self.ray
    if self.address and self.address != 'auto':  # Ray retries an address that answers nothing for minutes.
      _check_reachable(self.address)
    # Ray starts its local cluster's processes by fork and exec; JAX warns of any fork in a
    # process where its threads run, though nothing runs between the fork and the exec.
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called', category=RuntimeWarning)
    try:
      ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False,
               logging_level='ERROR', configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
      raise LauncherError(f'--ray_address={self.address}: cannot join the Ray cluster ({_first_line(e)}); '
                          'allowed: the address of a running cluster (ray start --head), or none for a local '
                          'one') from None
    try:
      check_shared(workdir, lambda path: ray.get(ray.remote(num_cpus=0)(read_file).remote(path)))
      task = ray.remote(max_retries=RESTARTS, **self.resources)(run_cell)
      pending = {task.remote(c.config_json, c.cell_dir): c for c in cells}
      status = {}
      while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(done[0])
        try:
          result = ray.get(done[0])
        except ray.exceptions.RayError as e:  # The worker died more than RESTARTS times.
          result = ('failed', f'Ray task failed: {_first_line(e)}')
        status[cell.name] = report(cell, *result)
      return status
    finally:
      ray.shutdown()


class Slurm:
  """Cells as a SLURM job array through submitit (`executor='local'`: submitit's local
  executor, which runs the jobs as processes of this machine, for tests)."""

  def __init__(self, partition: str = '', time_min: int = 60, cpus_per_cell: int = 1, gpus_per_cell: int = 0,
               max_parallel: int = 0, executor: str = ''):
    self.submitit = _import_extra('submitit', 'slurm')
    self.parameters = {'timeout_min': time_min, 'cpus_per_task': cpus_per_cell, 'gpus_per_node': gpus_per_cell,
                       **({'slurm_partition': partition} if partition else {}),
                       **({'slurm_array_parallelism': max_parallel} if max_parallel else {})}
    self.executor = executor

  def run(self, cells: list[Cell], report, workdir: str) -> dict[str, str]:
    submitit = self.submitit
    executor = submitit.AutoExecutor(folder=os.path.join(workdir, 'slurm', '%j'), cluster=self.executor or None)
    executor.update_parameters(name='pe_research', **self.parameters)
    if executor.cluster == 'slurm':  # Jobs run on other nodes: they must see the workdir.
      check_shared(workdir, lambda path: executor.submit(read_file, path).result())
    jobs = executor.map_array(run_cell, [c.config_json for c in cells], [c.cell_dir for c in cells])
    pending = dict(zip(jobs, cells))
    status = {}
    while pending:
      time.sleep(1)
      for job in [j for j in pending if j.done()]:
        cell = pending.pop(job)
        try:
          result = job.result()
        except submitit.core.utils.UncompletedJobError as e:  # Killed or preempted: resumes on a rerun.
          result = ('failed', f'job {job.job_id} did not finish ({_first_line(e)}); run the sweep again to resume it')
        except submitit.core.utils.FailedJobError as e:
          result = ('failed', f'job {job.job_id} failed ({_first_line(e)}); its log: {job.paths.stderr}')
        status[cell.name] = report(cell, *result)
    return status


def _check_reachable(address: str) -> None:
  """LauncherError unless something listens at `address` ([ray://]HOST:PORT), tried for
  a few seconds."""
  host, _, port = address.removeprefix('ray://').rpartition(':')
  try:
    socket.create_connection((host, int(port)), timeout=5).close()
  except (OSError, ValueError) as e:
    reason = 'not HOST:PORT' if isinstance(e, ValueError) else (e.strerror or type(e).__name__)
    raise LauncherError(f'--ray_address={address}: no Ray cluster answers there ({reason}); allowed: the address '
                        'of a running cluster (ray start --head), or none for a local one') from None


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return (lines[0] if lines else type(error).__name__)[:300]


if __name__ == '__main__':  # A local worker: the config on stdin, the cell directory as argument.
  from pe_research import runtime

  if os.environ.get(CORES):
    os.sched_setaffinity(0, [int(c) for c in os.environ[CORES].split(',')])
  runtime.configure()
  config = json.load(sys.stdin)
  print(RESULT_PREFIX + json.dumps(run_cell(config, sys.argv[1])), flush=True)
