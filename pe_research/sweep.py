"""Runs a grid of experiments, then reports them.

    python -m pe_research.sweep --sweep=configs/sweeps/quick.py --workdir=runs/quick

A sweep file's `get_config()` returns `make(base, grid)`: `base` is the run config every
cell starts from (e.g. configs/default.py, loaded with `load_config`), `grid` maps dotted
field names to lists of values, and there is one cell per combination. A cell runs in
`<workdir>/<field>=<value>,...`, where a field `<section>.name` is written as its section:
`task=reverse_string,encoding=rope`. Override base fields from the command line:
`--sweep.base.train.steps=500`.

A grid may also be a list of grids: the cells are then the union of each one's combinations
(e.g. a few task x encoding pairs that are no full product), each named as above.

Seeds: a cell trains `base.num_seeds` seeds at once (vmapped), far faster than one cell
per seed, so that is how a sweep covers seeds. A `seed` axis in the grid also works: it
makes separate cells (give them disjoint seed ranges), which the report merges.

Before anything trains, every cell's config is validated; a bad cell is reported by name
and recorded as failed (failed.json in its directory), the others run. A cell that already
finished is skipped, an interrupted one resumes from its checkpoint, and one that fails (a
diverged loss, an error) is recorded and the sweep goes on. A progress bar shows the steps
left (cells done, with several workers), cells done and the ETA. At the end the report
(`pe_research.report`) is written and its table printed; the exit status is 1 if any cell
failed.

Where the cells run is the launcher's choice (`--launcher=local|ray|slurm`,
`pe_research.launchers`): by default several at once on this machine, one worker process per
CPU core or GPU; `--workers=1` runs them one after another in this process.
"""

import copy
import itertools
import json
import os
import sys

from pe_research import runtime

if __name__ == '__main__':
  runtime.configure()  # Before JAX is imported: may restart the process with tcmalloc (runtime.py).

import ml_collections  # noqa: E402
from absl import flags, logging  # noqa: E402
from tqdm import tqdm  # noqa: E402

import jax  # noqa: E402

from pe_research import cli, estimate, experiment, io, launchers, locking, report  # noqa: E402
from pe_research.validation import validate  # noqa: E402


def load_config(path: str, variant: str = '') -> ml_collections.ConfigDict:
  """`get_config(variant)` of the config file at `path`, as `--config=path:variant` would
  give it (for sweep files to build their base config)."""
  return cli.load_config_file(f'{path}:{variant}' if variant else path)


def make(base: ml_collections.ConfigDict, grid: dict | list[dict]) -> ml_collections.ConfigDict:
  """A sweep config: cells are `base` with each combination of the `grid` values (of each
  grid's, in order, when `grid` is a list of grids)."""
  as_grid = lambda g: ml_collections.ConfigDict(g, allow_dotted_keys=True, sort_keys=False)
  return ml_collections.ConfigDict({
      'base': base,
      'grid': [as_grid(g) for g in grid] if isinstance(grid, list) else as_grid(grid),
  })


def _grids(sweep) -> list:
  """The sweep's grids: its one grid, or each of its list."""
  return list(sweep.grid) if isinstance(sweep.grid, list) else [sweep.grid]


def check(sweep, spec: str = 'the sweep') -> None:
  """UsageError (naming the file and line of `spec`) unless `sweep` is what `make` returns:
  a base config and a non-empty grid of fields to non-empty lists of values."""
  where = spec.partition(':')[0]
  grid = sweep.get('grid')
  grids = grid if isinstance(grid, list) and grid else [grid]
  if not isinstance(sweep.get('base'), ml_collections.ConfigDict) or not all(
      isinstance(g, ml_collections.ConfigDict) for g in grids):
    raise cli.UsageError(f'{where}: get_config() must return sweep.make(base, grid), a base config and a grid '
                         f'(or a non-empty list of grids); got the fields {", ".join(sweep.keys()) or "none"}')
  for grid in grids:
    if not grid:
      raise cli.UsageError(f'{where}: the grid is empty; allowed: at least one field with a list of values')
    for field, values in grid.items():
      if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
        raise cli.UsageError(f'{cli.field_line(spec, field)}: grid field {field}={values!r} must be a non-empty '
                             f"list of values, e.g. [{values!r}]")


def _axis_name(field: str) -> str:
  return field.removesuffix('.name')


def cells(sweep: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict | None, str | None]]:
  """[(cell name, config, None)] in grid order; (name, None, error) for a cell whose grid
  values cannot be set or whose config does not validate."""
  combinations = [(list(grid.keys()), values) for grid in _grids(sweep)
                  for values in itertools.product(*grid.values())]
  result = []
  for fields, values in combinations:
    name = ','.join(f'{_axis_name(f)}={v}'.replace(os.sep, '_') for f, v in zip(fields, values))
    config = copy.deepcopy(sweep.base)
    config.lock()  # A misspelt grid field is an error, not a new field.
    try:
      for field, value in zip(fields, values):
        try:
          config.update_from_flattened_dict({field: value})
        except (KeyError, TypeError, AttributeError) as e:
          raise ValueError(f'grid field {field}={value!r}: {e.args[0] if e.args else e}') from e
      validate(config)
      result.append((name, config, None))
    except ValueError as e:
      result.append((name, None, str(e)))
  return result


def run(sweep: ml_collections.ConfigDict, workdir: str, launcher=None) -> dict[str, str]:
  """Runs every cell of `sweep` under `workdir` that has not finished, through `launcher`
  (`launchers.Local`, `.Ray` or `.Slurm`; default: one after another in this process);
  returns {cell name: 'skipped' (finished before), 'done' or 'failed'}. The sweep directory
  is locked meanwhile (`locking.hold`), as each cell's is."""
  launcher = launcher or launchers.Local(workers=1)
  with locking.hold(workdir):
    io.write_json_atomic(os.path.join(workdir, 'sweep.json'), json.loads(sweep.to_json_best_effort()))
    all_cells = cells(sweep)
    status, todo = {}, []
    for name, config, error in all_cells:
      cell_dir = os.path.join(workdir, name)
      if error is not None:
        os.makedirs(cell_dir, exist_ok=True)
        io.write_json_atomic(os.path.join(cell_dir, experiment.FAILED), {'error': f'config error: {error}'})
        tqdm.write(f'{name}: FAILED: config error: {error}')
        status[name] = 'failed'
      elif experiment.finished_summary(config, cell_dir) is not None:
        tqdm.write(f'{name}: finished before, skipped')
        status[name] = 'skipped'
      else:
        todo.append(launchers.Cell(name, experiment.config_json(config), cell_dir, config.train.steps))
    if isinstance(launcher, launchers.Local) and launcher.in_process(len(todo)):
      status.update(_run_here(todo, len(all_cells), status))
    elif todo:
      status.update(_run_placed(todo, len(all_cells), status, launcher, workdir))
  return status


def dry_run(sweep: ml_collections.ConfigDict, workdir: str, measure=None) -> str:
  """What `run` would do, and its cost: every cell with its state (finished, to run, or its
  config error) and, for those to run, the estimated training time on this machine
  (`pe_research.estimate`); writes nothing."""
  lines, todo, all_cells = [], [], cells(sweep)
  for name, config, error in all_cells:
    if error is not None:
      lines.append(f'{name}: config error: {error}')
    elif experiment.finished_summary(config, os.path.join(workdir, name)) is not None:
      lines.append(f'{name}: finished')
    else:
      todo.append((name, config))
  estimated = estimate.estimate(todo, *([measure] if measure else []))
  lines += [f'{name}: to run, about {_duration(seconds)}' for name, seconds in estimated]
  total = sum(seconds for _, seconds in estimated) / 3600
  lines.append(f'{len(estimated)} of {len(all_cells)} cells to run: about {total:.1f} device-hours of training on '
               f'{jax.devices()[0].device_kind} (one cell per device or CPU worker; evaluation comes on top)')
  return '\n'.join(lines)


def _duration(seconds: float) -> str:
  return f'{seconds:.0f} s' if seconds < 120 else f'{seconds / 60:.0f} min' if seconds < 7200 else f'{seconds / 3600:.1f} h'


def _cells_done(status: dict[str, str], num_cells: int) -> str:
  failed = sum(s == 'failed' for s in status.values())
  return f'{len(status) - failed}/{num_cells} cells done, {failed} failed'


def _report_line(cell: launchers.Cell, result: str, line: str) -> str:
  """Prints a cell's outcome; returns its status."""
  tqdm.write(f'{cell.name}: {line}' if result == 'done' else f'{cell.name}: {result.upper()}: {line}')
  return result


def _run_here(todo: list[launchers.Cell], num_cells: int, status: dict[str, str]) -> dict[str, str]:
  """Runs the cells one after another in this process, with a bar of the steps left."""
  done = {}
  bar = tqdm(total=sum(cell.steps for cell in todo), unit='step', dynamic_ncols=True)
  for cell in todo:
    bar.set_description(cell.name)
    bar.set_postfix_str(_cells_done({**status, **done}, num_cells))
    trained_to = None

    def progress(step: int) -> None:
      nonlocal trained_to
      if trained_to is None:
        bar.total -= step  # Steps done before a resume are not trained again.
        bar.refresh()
      else:
        bar.update(step - trained_to)
      trained_to = step

    done[cell.name] = _report_line(cell, *launchers.run_cell(cell.config_json, cell.cell_dir, progress))
    if done[cell.name] == 'failed':
      bar.total -= cell.steps - (trained_to or 0)
      bar.refresh()
  bar.set_postfix_str(_cells_done({**status, **done}, num_cells))
  bar.close()
  return done


def _run_placed(todo: list[launchers.Cell], num_cells: int, status: dict[str, str], launcher,
                workdir: str) -> dict[str, str]:
  """Hands the cells to `launcher`, with a bar of the cells done and the time left."""
  bar = tqdm(total=len(todo), unit='cell', dynamic_ncols=True, desc=f'{type(launcher).__name__.lower()} launcher')
  done = {}

  def report(cell: launchers.Cell, result: str, line: str) -> str:
    if result != 'restarted':
      done[cell.name] = result
      bar.update(1)
      bar.set_postfix_str(_cells_done({**status, **done}, num_cells))
    return _report_line(cell, result, line)

  try:
    return launcher.run(todo, report, workdir)
  except launchers.LauncherError as e:
    raise cli.UsageError(str(e)) from None
  finally:
    bar.close()


def define_flags(flag_values, argv: list[str]) -> None:
  cli.add_config_flag(flag_values, argv, 'sweep', 'a sweep file, see configs/sweeps/')
  flags.DEFINE_string('workdir', None, 'Sweep directory: one subdirectory per cell, and the report.',
                      flag_values=flag_values, required=True)
  flags.DEFINE_float('underfit_threshold', report.UNDERFIT_THRESHOLD,
                     'The report flags groups whose mean in-distribution accuracy is below this.',
                     lower_bound=0.0, upper_bound=1.0, flag_values=flag_values)
  flags.DEFINE_enum('launcher', 'local', launchers.LAUNCHERS, 'Where the cells run (pe_research/launchers.py).',
                    flag_values=flag_values)
  flags.DEFINE_integer('workers', 0, 'local: cells at once, each in its own process on its own cores or GPU; '
                       '0: one per GPU, else one per CPU core; 1: one after another in this process.',
                       lower_bound=0, flag_values=flag_values)
  flags.DEFINE_string('ray_address', '', 'ray: the address of a running Ray cluster (HOST:PORT, or auto); '
                      'none: a local cluster started for the sweep.', flag_values=flag_values)
  flags.DEFINE_float('cpus_per_cell', 1, 'ray, slurm: CPU cores a cell asks for.', lower_bound=0,
                     flag_values=flag_values)
  flags.DEFINE_float('gpus_per_cell', 0, 'ray, slurm: GPUs a cell asks for.', lower_bound=0, flag_values=flag_values)
  flags.DEFINE_string('slurm_partition', '', 'slurm: the partition (none: the cluster\'s default).',
                      flag_values=flag_values)
  flags.DEFINE_integer('slurm_time_min', 60, 'slurm: a job\'s time limit in minutes; a cell cut off resumes when '
                       'the sweep runs again.', lower_bound=1, flag_values=flag_values)
  flags.DEFINE_bool('dry_run', False, 'List the cells and estimate their training cost on this machine (from '
                    'a few timed steps per task); run nothing.', flag_values=flag_values)
  flags.DEFINE_integer('max_parallel', 0, 'slurm: most jobs of the array at once (0: no limit).', lower_bound=0,
                       flag_values=flag_values)


def make_launcher(flag_values):
  """The launcher the flags ask for; UsageError for one that cannot start here."""
  try:
    if flag_values.launcher == 'ray':
      return launchers.Ray(flag_values.ray_address, flag_values.cpus_per_cell, flag_values.gpus_per_cell)
    if flag_values.launcher == 'slurm':
      return launchers.Slurm(flag_values.slurm_partition, flag_values.slurm_time_min, int(flag_values.cpus_per_cell),
                             int(flag_values.gpus_per_cell), flag_values.max_parallel)
  except launchers.LauncherError as e:
    raise cli.UsageError(str(e)) from None
  return launchers.Local(flag_values.workers)


def main(flag_values) -> None:
  sweep = flag_values.sweep
  check(sweep, flag_values['sweep'].config_spec)
  if not flag_values['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # The progress bar instead of per-call logs.
  if flag_values.dry_run:
    print(dry_run(sweep, flag_values.workdir))
    return
  status = run(sweep, flag_values.workdir, make_launcher(flag_values))
  print(report.write(flag_values.workdir, underfit_threshold=flag_values.underfit_threshold))
  failed = [name for name, s in status.items() if s == 'failed']
  if failed:
    sys.exit(f'{len(failed)} of {len(status)} cells failed: {", ".join(failed)}')


if __name__ == '__main__':
  cli.run(main, define_flags)
