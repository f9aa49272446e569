"""The jobs an experiment config can name (`config.job`).

Each job has a runner and a start-up validator; `validate` runs before any
model loads, so a bad field fails at once with its name and the fix.
"""

from optimas_jax import methods
from optimas_jax.core.registry import lookup
from optimas_jax.lrf import run as lrf_run
from optimas_jax.lrf.config import validate_lrf_config
from optimas_jax.tasks.geo import core_demo


def _validate_lrf_job(config) -> None:
  validate_lrf_config(config.lrf)


# name -> (runner(config, workdir), validator(config) or None)
JOBS = {
    "core_demo": (core_demo.run, None),
    "lrf": (lrf_run.run, _validate_lrf_job),
    "optimas": (methods.run_job, methods.validate),
}


def validate(config) -> None:
  """Start-up checks shared by every job: a clear error naming the field."""
  _, check = lookup(JOBS, config.get("job"), "config.job")
  if check is not None:
    check(config)


def runner(job: str):
  return lookup(JOBS, job, "config.job")[0]
