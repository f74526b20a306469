"""Trains and evaluates one configuration.

    python -m pe_research.main --config=configs/default.py --workdir=runs/demo \
        --config.encoding.name=rope --config.train.steps=2000
"""

from pe_research import runtime

if __name__ == '__main__':
  runtime.configure()  # Before JAX is imported: may restart the process with tcmalloc (runtime.py).

from absl import flags  # noqa: E402

from pe_research import cli  # noqa: E402


def define_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
  cli.add_config_flag(flag_values, argv, 'config', 'an experiment config file, e.g. configs/default.py')
  flags.DEFINE_string('workdir', None, 'Directory for config, logs and results.', flag_values=flag_values,
                      required=True)
  flags.DEFINE_bool('distributed', False, 'Multi-host run: call jax.distributed.initialize() first.',
                    flag_values=flag_values)


def main(flag_values: flags.FlagValues) -> None:
  from pe_research import experiment, validation  # noqa: PLC0415  (JAX starts here, after runtime.configure)

  if flag_values.distributed:  # Before anything else starts JAX's backends.
    import jax  # noqa: PLC0415

    try:
      jax.distributed.initialize()
    except Exception as e:  # JAX's error when no cluster is found is a long traceback.
      raise cli.UsageError(f'--distributed: jax.distributed.initialize() failed ({cli.one_line(e)[:200]}); run '
                           'without --distributed on one host, or under a launcher that sets the coordinator '
                           '(SLURM, Cloud TPU, JAX_COORDINATOR_ADDRESS)') from None
  config = flag_values.config
  validation.validate_command_line(config, flag_values['config'])
  print(experiment.format_summary(experiment.run(config, flag_values.workdir)))


if __name__ == '__main__':
  cli.run(main, define_flags)
