"""Trains and evaluates one configuration.

    python -m pe_research.main --config=configs/default.py --workdir=runs/demo \
        --config.encoding.name=rope --config.train.steps=2000
"""

import sys

from pe_research import runtime

if __name__ == '__main__':
  runtime.configure()  # Before JAX is imported: may restart the process with tcmalloc (runtime.py).

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from pe_research import experiment, validation  # noqa: E402

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for config, logs and results.', required=True)
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Multi-host run: call jax.distributed.initialize() first.')


def main(argv):
  del argv
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  try:
    validation.validate(_CONFIG.value)
  except ValueError as e:
    sys.exit(f'config error: {e}')
  try:
    summary = experiment.run(_CONFIG.value, _WORKDIR.value)
  except experiment.RunFailed as e:
    sys.exit(f'run failed: {e}')
  print(experiment.format_summary(summary))


if __name__ == '__main__':
  app.run(main)
