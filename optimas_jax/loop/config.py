"""The one start-up check of an Optimas experiment config (no model is loaded).

Every field the loop reads is checked here, so a bad value fails in a
second with the field's name and the fix, not an hour into a run.
"""

from __future__ import annotations

from optimas_jax.loop.gate import SPENDING, TESTS
from optimas_jax.loop.methods import METHODS
from optimas_jax.lrf.config import validate_lrf_config

SELECTIONS = ("uniform", "gap_softmax", "round_robin")


def validate(config) -> None:
  def bad(field, message):
    raise ValueError(f"config.{field}: {message}")

  from optimas_jax.tasks.registry import TASKS
  if config.method not in METHODS:
    bad("method", f"got {config.method!r}; choose one of {sorted(METHODS)}")
  if config.task not in TASKS:
    bad("task", f"got {config.task!r}; choose one of {sorted(TASKS)}")
  from optimas_jax.tasks import registry
  registry.validate(config)
  loop = config.loop
  if loop.selection not in SELECTIONS:
    bad("loop.selection", f"got {loop.selection!r}; choose one of {SELECTIONS}")
  if loop.selection_temperature <= 0:
    bad("loop.selection_temperature", f"got {loop.selection_temperature}; use > 0")
  if loop.gate not in TESTS:
    bad("loop.gate", f"got {loop.gate!r}; choose one of {TESTS}")
  if loop.get("gate_spending", "series") not in SPENDING:
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
  for field, low in (("search_budget", 1), ("policy_steps", 1), ("policy_group", 1),
                     ("prompt_llm_proposals", 0), ("prompt_edit_proposals", 0)):
    if optimizers[field] < low:
      bad(f"optimizers.{field}", f"got {optimizers[field]}; use >= {low}")
  if optimizers.policy_lr <= 0:
    bad("optimizers.policy_lr", f"got {optimizers.policy_lr}; use > 0")
  rl = optimizers.get("rl")
  if rl is not None:
    if rl.algorithm not in ("grpo", "ppo"):
      bad("optimizers.rl.algorithm", f"got {rl.algorithm!r}; choose 'grpo' or 'ppo'")
    for field, low in (("steps", 1), ("prompts", 1), ("group", 2), ("inner_epochs", 1),
                       ("metric_rollouts", 1)):
      if rl[field] < low:
        bad(f"optimizers.rl.{field}", f"got {rl[field]}; use >= {low}")
    for field in ("learning_rate", "temperature", "clip_eps"):
      if not rl[field] > 0:
        bad(f"optimizers.rl.{field}", f"got {rl[field]}; use > 0")
    if rl.kl_coef < 0:
      bad("optimizers.rl.kl_coef", f"got {rl.kl_coef}; use >= 0")
  if METHODS[config.method].trains_lrf:
    validate_lrf_config(config.lrf)
    for field in ("initial_epochs", "replay_pairs"):
      if config.lrf[field] < 1:
        bad(f"lrf.{field}", f"got {config.lrf[field]}; use >= 1")
