"""The jobs an experiment config can name (`config.job`), imported lazily.

Each job has a runner and a start-up validator; `validate` runs before any
model loads, so a bad field fails at once with its name and the fix.
"""

import importlib

JOBS = {
    "core_demo": "optimas_jax.tasks.geo.core_demo:run",
    "lrf": "optimas_jax.lrf.run:run",
    "optimas": "optimas_jax.loop:run",
}

VALIDATORS = {
    "lrf": "optimas_jax.jobs:validate_lrf_job",
    "optimas": "optimas_jax.loop.config:validate",
}


def validate_lrf_job(config) -> None:
  from optimas_jax.lrf.config import validate_lrf_config
  validate_lrf_config(config.lrf)


def _resolve(path: str):
  module, fn = path.split(":")
  return getattr(importlib.import_module(module), fn)


def validate(config) -> None:
  """Start-up checks shared by every job: a clear error naming the field."""
  job = config.get("job")
  if job not in JOBS:
    raise ValueError(f"config.job={job!r} is not a known job; choose one of {sorted(JOBS)}")
  if job in VALIDATORS:
    _resolve(VALIDATORS[job])(config)


def runner(job: str):
  return _resolve(JOBS[job])
