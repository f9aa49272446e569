"""The jobs an experiment config can name (`config.job`), imported lazily."""

JOBS = {
    "core_demo": "optimas_jax.tasks.geo.core_demo:run",
    "lrf": "optimas_jax.lrf.run:run",
    "optimas": "optimas_jax.loop:run",
}


def validate(config) -> None:
  """Start-up checks shared by every job: a clear error naming the field."""
  job = config.get("job")
  if job not in JOBS:
    raise ValueError(f"config.job={job!r} is not a known job; choose one of {sorted(JOBS)}")
