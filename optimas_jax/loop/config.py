"""The one start-up check of an Optimas experiment config (no model is loaded).

Every field the loop reads is checked here, so a bad value fails in a
second with the field's name and the fix, not an hour into a run.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from optimas_jax.loop.gate import SPENDING, TESTS
from optimas_jax.lrf.config import validate_lrf_config
from optimas_jax.optimize.policy import PolicyConfig
from optimas_jax.rl import config as rl_config
from optimas_jax.tasks import registry

SELECTIONS = ("uniform", "gap_softmax", "round_robin")


def _check_fields(where: str, given, dataclass) -> None:
  known = {f.name for f in dataclasses.fields(dataclass)}
  unknown = sorted(set(given) - known)
  if unknown:
    raise ValueError(f"config.{where}: unknown fields {unknown}; known: {sorted(known)}")


BACKENDS = ("local", "ray")


def _validate_execution(execution) -> None:
  if execution.backend not in BACKENDS:
    raise ValueError(f"config.execution.backend: got {execution.backend!r}; choose one of "
                     f"{BACKENDS}")
  if execution.backend != "ray":
    return
  if importlib.util.find_spec("ray") is None:
    raise ValueError("config.execution.backend='ray' needs Ray: pip install -e '.[ray]' "
                     "(or use execution.backend='local')")
  if execution.ray_actors < 1:
    raise ValueError(f"config.execution.ray_actors: got {execution.ray_actors}; use >= 1")
  if execution.ray_cpus_per_actor <= 0:
    raise ValueError(f"config.execution.ray_cpus_per_actor: got "
                     f"{execution.ray_cpus_per_actor}; use > 0")


def validate(config, trains_lrf: bool) -> None:
  """The task's fields and the harness's, and the LRF's where the method trains one."""
  def bad(field, message):
    raise ValueError(f"config.{field}: {message}")

  registry.validate(config)
  _validate_execution(config.execution)
  loop = config.loop
  if loop.selection not in SELECTIONS:
    bad("loop.selection", f"got {loop.selection!r}; choose one of {SELECTIONS}")
  if loop.selection_temperature <= 0:
    bad("loop.selection_temperature", f"got {loop.selection_temperature}; use > 0")
  if loop.gate not in TESTS:
    bad("loop.gate", f"got {loop.gate!r}; choose one of {TESTS}")
  if loop.gate_spending not in SPENDING:
    bad("loop.gate_spending", f"got {loop.gate_spending!r}; choose one of {SPENDING}")
  if not 0 < loop.gate_confidence < 1:
    bad("loop.gate_confidence", f"got {loop.gate_confidence}; use a value in (0, 1), e.g. 0.9")
  for field, low in (("iterations", 0), ("examples_per_iteration", 1), ("val_repeats", 0),
                     ("test_repeats", 1), ("budget_runs", 0), ("cooldown", 0),
                     ("gate_resamples", 100)):
    if loop[field] < low:
      bad(f"loop.{field}", f"got {loop[field]}; use >= {low}")
  collect = config.collect
  if collect.num_candidates < 2:
    bad("collect.num_candidates", f"got {collect.num_candidates}; a pair needs >= 2")
  for field in ("num_rollouts", "initial_examples"):
    if collect[field] < 1:
      bad(f"collect.{field}", f"got {collect[field]}; use >= 1")
  optimizers = config.optimizers
  for field, low in (("search_budget", 1), ("prompt_llm_proposals", 0),
                     ("prompt_edit_proposals", 0)):
    if optimizers[field] < low:
      bad(f"optimizers.{field}", f"got {optimizers[field]}; use >= {low}")
  _check_fields("optimizers.policy", optimizers.policy, PolicyConfig)
  PolicyConfig(**optimizers.policy)           # raises naming config.optimizers.policy.<field>
  rl = optimizers.get("rl")
  if rl is not None:
    for field, low in (("steps", 1), ("prompts", 1), ("metric_rollouts", 1)):
      if rl[field] < low:
        bad(f"optimizers.rl.{field}", f"got {rl[field]}; use >= {low}")
    rl_config.from_experiment(rl)             # raises naming config.optimizers.rl.<field>
  if trains_lrf:
    validate_lrf_config(config.lrf)
    for field in ("initial_epochs", "replay_pairs"):
      if config.lrf[field] < 1:
        bad(f"lrf.{field}", f"got {config.lrf[field]}; use >= 1")
