"""Evaluates a trained run again, at other lengths or with other evaluation settings,
without retraining.

    python -m pe_research.evaluate --workdir=runs/demo --config.eval.max_length=1000
    python -m pe_research.evaluate --workdir=runs/rope --config.encoding.rope.scaling=yarn --name=yarn

The run's config.json is the base config (under today's field names, with fields added
since the run at their defaults); the command line may change only what
evaluation alone reads (`experiment.EVALUATION_FIELDS`: the `eval` section and
`encoding.positions.resample_at_eval`, and the evaluation-time options an encoding declares,
`Encoding.evaluation_options`, such as RoPE's context extension). The latest checkpoint is
evaluated (a run still training is evaluated at its last checkpoint, with a warning), under
the workdir's lock, and the results go to their own directory,
`<workdir>/evaluations/<name>/` (name: `--name`, else the changed fields): config.json,
eval.jsonl and summary.json, as a run writes them, so `pe_research.report` shows them as
runs of their own beside the original.
"""

import collections
import os
import time

from pe_research import runtime

if __name__ == '__main__':
  runtime.configure()  # Before JAX is imported: may restart the process with tcmalloc (runtime.py).

import ml_collections  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from pe_research import cli  # noqa: E402

DIRECTORY = 'evaluations'
# A run written before a field existed takes that field from here (`experiment.current_fields`).
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'configs', 'default.py')


def define_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
  workdir = next((a.split('=', 1)[1] for a in argv if a.startswith('--workdir=')), None)
  if not workdir:
    raise cli.UsageError('--workdir is required: the directory of a trained run')
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise cli.UsageError(f'--workdir={workdir} holds no run (no config.json)')
  from pe_research import experiment  # noqa: PLC0415  (JAX starts here)

  try:
    stored = experiment.stored_config(workdir)
  except experiment.RunFailed as e:  # Unreadable, or not a config: the flag names no run.
    raise cli.UsageError(str(e)) from None
  defaults = experiment.config_json(cli.load_config_file(DEFAULT_CONFIG))
  config_flags.DEFINE_config_dict('config', ml_collections.ConfigDict(experiment.current_fields(stored, defaults)),
                                  'The run config; override '
                                  'evaluation fields with --config.eval.max_length=...', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'Directory of the trained run.', flag_values=flag_values, required=True)
  flags.DEFINE_string('name', '', 'Name of this evaluation (default: the changed fields).', flag_values=flag_values)


def evaluation_name(changed: dict) -> str:
  """The directory name of an evaluation with `changed` fields: 'field=value,...'."""
  return ','.join(f'{field}={value}' for field, value in changed.items()).replace(os.sep, '_') or 'as_trained'


def main(flag_values: flags.FlagValues) -> None:
  from absl import logging  # noqa: PLC0415

  from pe_research import encodings, experiment, io, locking, validation  # noqa: PLC0415  (JAX starts here)

  workdir, config = flag_values.workdir, flag_values.config
  stored = experiment.stored_config(workdir)
  changed = {f: v for f, v in experiment.flat_config(experiment.config_json(config)).items()
             if f in experiment.differing_fields(config, stored)}
  options = [f'encoding.{o}' for o in encodings.encoding_class(config.encoding.name).evaluation_options]
  trained_fields = [f for f in changed if not experiment.is_evaluation_field(f) and f not in options]
  if trained_fields:
    raise cli.UsageError(
        f'--config.{trained_fields[0]}: training reads this field, so only a new run can change it; evaluation '
        f'may change the eval section, {", ".join(["encoding.positions.resample_at_eval", *options])}')
  task = validation.validate(config)
  out = os.path.join(workdir, DIRECTORY, flag_values.name or evaluation_name(changed))
  start = time.perf_counter()
  with locking.hold(workdir):
    trained = experiment.restore_trained(config, task, workdir)
    if trained.step < config.train.steps:
      logging.warning('%s has trained %d of %d steps: evaluating its checkpoint at step %d', workdir, trained.step,
                      config.train.steps, trained.step)
    os.makedirs(out, exist_ok=True)
    io.write_json_atomic(os.path.join(out, experiment.CONFIG), experiment.config_json(config))
    compilations = collections.Counter()
    records = experiment.evaluate(config, task, trained, os.path.join(out, experiment.EVAL), compilations)
    summary = experiment.make_summary(config, task, trained, records, compilations, time.perf_counter() - start)
    io.write_json_atomic(os.path.join(out, experiment.SUMMARY), summary)
  print(experiment.format_summary(summary))
  print(f'results: {out}')


if __name__ == '__main__':
  cli.run(main, define_flags, resumable=False)
