"""The runner a task's system gets from `config.execution` (system/runners.py).

One process: LocalRunner. A multi-process JAX run (jax.distributed): each
process runs its block of every batch (ProcessRunner). `ray`: actors that
each build the task's system from the config (one model load per actor).
"""

from __future__ import annotations

import functools

import jax
from absl import logging

from optimas_jax.system import runners
from optimas_jax.tasks import registry


def build_system(config):
  """The task's system, built from the config (what a Ray actor runs)."""
  return registry.build(config).system


def runner(config) -> runners.Runner:
  execution = config.execution
  if execution.backend == "ray":
    if jax.process_count() > 1:
      raise ValueError("config.execution.backend='ray' in a multi-process JAX run: the "
                       "processes already split the rollouts; use execution.backend='local' "
                       "or run one process")
    return runners.RayRunner(functools.partial(build_system, config),
                             num_actors=execution.ray_actors, address=execution.ray_address,
                             cpus_per_actor=execution.ray_cpus_per_actor)
  if jax.process_count() > 1:
    return runners.ProcessRunner()
  return runners.LocalRunner()


def place(task, config):
  """`task` with its system's runner set from the config."""
  task.system.runner = runner(config)
  logging.info("system runs and rollouts: %s", task.system.runner)
  return task
