"""Trains and evaluates one configuration.

    python -m pe_research.main --config=configs/default.py --workdir=runs/demo \
        --config.encoding.name=rope --config.train.steps=2000
"""

from pe_research import runtime

if __name__ == '__main__':
  runtime.configure()  # Before JAX is imported: may restart the process with tcmalloc (runtime.py).

import os  # noqa: E402

from absl import flags  # noqa: E402

from pe_research import cli  # noqa: E402


def define_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
  cli.add_config_flag(flag_values, argv, 'config', 'an experiment config file, e.g. configs/default.py')
  flags.DEFINE_string('workdir', None, 'Directory for config, logs and results.', flag_values=flag_values,
                      required=True)
  flags.DEFINE_bool('distributed', False, 'Multi-host run: call jax.distributed.initialize() first.',
                    flag_values=flag_values)


# Environment variables for a cluster JAX does not detect: jax.distributed.initialize()
# reads JAX_COORDINATOR_ADDRESS itself, but takes the number of processes and this one's
# index only from a detected cluster (SLURM, Cloud TPU, MPI, Kubernetes) or as arguments.
CLUSTER_VARIABLES = {'JAX_NUM_PROCESSES': 'num_processes', 'JAX_PROCESS_ID': 'process_id'}


def cluster_from_environment(environ) -> dict:
  """The arguments of jax.distributed.initialize() that CLUSTER_VARIABLES set in `environ`
  ({} when none is set: JAX detects the cluster); UsageError for one that is not an integer."""
  arguments = {}
  for variable, argument in CLUSTER_VARIABLES.items():
    value = environ.get(variable, '').strip()
    if value:
      try:
        arguments[argument] = int(value)
      except ValueError:
        raise cli.UsageError(f'--distributed: {variable}={value!r} is not an integer; allowed: e.g. '
                             f'{variable}={"2" if argument == "num_processes" else "0"}') from None
  return arguments


def main(flag_values: flags.FlagValues) -> None:
  from pe_research import experiment, validation  # noqa: PLC0415  (JAX starts here, after runtime.configure)

  if flag_values.distributed:  # Before anything else starts JAX's backends.
    import jax  # noqa: PLC0415

    processes = cluster_from_environment(os.environ)
    try:
      jax.distributed.initialize(**processes)
    except Exception as e:  # JAX's error when no cluster is found is a long traceback.
      raise cli.UsageError(f'--distributed: jax.distributed.initialize() failed ({cli.one_line(e)[:200]}); run '
                           'without --distributed on one host, or under a launcher that sets the coordinator '
                           '(SLURM, Cloud TPU, JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)') from None
  config = flag_values.config
  validation.validate_command_line(config, flag_values['config'])
  print(experiment.format_summary(experiment.run(config, flag_values.workdir)))


if __name__ == '__main__':
  cli.run(main, define_flags)
