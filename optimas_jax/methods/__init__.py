"""Every method by name (`config.method`): Optimas's variants and the paper's peers.

Each is a Method (loop/method.py) run inside the one Harness (loop/harness.py):

  optimas, optimas_static, coordinate, unoptimized   loop/optimas.py
  mipro_instructions, mipro                          peers/mipro.py (DSPy MIPROv2)
  gepa                                               peers/gepa.py
  textgrad                                           peers/textgrad.py

The peers need the `peers` extra only when they run.
"""

from __future__ import annotations

import json

from absl import logging

from optimas_jax.core.registry import lookup
from optimas_jax.loop import config as loop_config
from optimas_jax.loop import harness
from optimas_jax.loop.optimas import VARIANTS
from optimas_jax.methods import placement
from optimas_jax.optimize import text_policy
from optimas_jax.tasks.base import TextPolicy
from optimas_jax.peers import gepa, mipro, textgrad
from optimas_jax.tasks import registry as tasks

METHODS = {**VARIANTS, **{m.name: m for m in (mipro.INSTRUCTIONS, mipro.FULL, gepa.METHOD,
                                               textgrad.METHOD)}}


def get(name: str):
  return lookup(METHODS, name, "config.method")


def validate(config) -> None:
  """Start-up check of an experiment config: method, task, harness, LRF, method's own."""
  method = get(config.method)
  loop_config.validate(config, trains_lrf=getattr(method, "trains_lrf", False))
  check = getattr(method, "validate", None)
  if check is not None:
    check(config)


def run(task, config, workdir, reuse_summary: bool = False) -> dict:
  """Runs `config.method` on `task` in the Harness; returns summary.json's content."""
  method = get(config.method)
  return harness.run(method, task, config, workdir,
                     reuse_summary=reuse_summary or not getattr(method, "resumable", True))


def run_job(config, workdir: str) -> dict:
  """Entry for `config.job == "optimas"`: builds the task, runs the method."""
  task = placement.place(tasks.build(config), config)
  for name, policy in task.policies.items():
    if isinstance(policy, TextPolicy):      # before any RL step compiles
      logging.info("%s: %s", name, text_policy.memory_report(policy, config.optimizers.rl))
  summary = run(task, config, workdir)
  print(json.dumps({k: summary[k] for k in ("method", "seed", "test", "val", "iterations",
                                            "budget_runs", "wall_s")}, default=float))
  return summary
