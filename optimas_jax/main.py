"""Entry point: `python -m optimas_jax.main --config=experiments/X.py --workdir=DIR`.

Intentionally short: parse flags, log the devices, hand the config to the
job it names. Override any field from the command line, e.g.
`--config.seed=3`.
"""

import pathlib

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from optimas_jax import jobs
from optimas_jax.core.mesh import is_writer
from optimas_jax.runtime import QuietLibraries, configure_process, init_distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics, configs and checkpoints go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(QuietLibraries())
  logging.info("host memory: %s", configure_process())
  config = _CONFIG.value
  jobs.validate(config)
  init_distributed()
  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  if is_writer():
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  jobs.runner(config.job)(config, str(workdir))


if __name__ == "__main__":
  app.run(main)
