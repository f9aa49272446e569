"""Task builders by name (`config.task`): each task module has `build(config)` and,
optionally, `validate(config)`, run before any model or data loads."""

from __future__ import annotations

from optimas_jax.core.registry import lookup
from optimas_jax.tasks.amazon import task as amazon
from optimas_jax.tasks.code import task as code
from optimas_jax.tasks.geo import hop_task as geo_hop
from optimas_jax.tasks.geo import task as geo
from optimas_jax.tasks.hotpotqa import task as hotpotqa
from optimas_jax.tasks.pubmedqa import task as pubmedqa
from optimas_jax.tasks.stark import task as stark

# name -> (module with validate, builder)
TASKS = {
    "geoqa": (geo, geo.build),
    "geoqa_hop": (geo_hop, geo_hop.build),
    "amazon": (amazon, amazon.build),
    "amazon_llm": (amazon, amazon.build_llm),
    "pubmedqa": (pubmedqa, pubmedqa.build),
    "hotpotqa": (hotpotqa, hotpotqa.build),
    "stark": (stark, stark.build),
    "code": (code, code.build),
}


def validate(config) -> None:
  """The task's own start-up check of its config fields."""
  module, _ = lookup(TASKS, config.task, "config.task")
  check = getattr(module, "validate", None)
  if check is not None:
    check(config)


def build(config):
  return lookup(TASKS, config.task, "config.task")[1](config)
