"""Task builders by name (`config.task`)."""

from __future__ import annotations

import importlib

TASKS = {
    "geoqa": "optimas_jax.tasks.geo.task:build",
    "geoqa_hop": "optimas_jax.tasks.geo.hop_task:build",
    "amazon": "optimas_jax.tasks.amazon.task:build",
    "amazon_llm": "optimas_jax.tasks.amazon.task:build_llm",
    "pubmedqa": "optimas_jax.tasks.pubmedqa.task:build",
    "hotpotqa": "optimas_jax.tasks.hotpotqa.task:build",
    "stark": "optimas_jax.tasks.stark.task:build",
    "code": "optimas_jax.tasks.code.task:build",
}


def validate(config) -> None:
  """The task's own start-up check of its config fields (a module-level `validate(config)`
  beside its builder), run before any model or data loads."""
  module = importlib.import_module(TASKS[config.task].split(":")[0])
  check = getattr(module, "validate", None)
  if check is not None:
    check(config)


def build(config):
  if config.task not in TASKS:
    raise ValueError(f"config.task={config.task!r} is not a known task; choose one of "
                     f"{sorted(TASKS)}")
  module, fn = TASKS[config.task].split(":")
  return getattr(importlib.import_module(module), fn)(config)
