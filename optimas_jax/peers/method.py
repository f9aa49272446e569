"""A peer as a Method (loop/method.py): its search inside the Harness, on a served LLM.

Each peer module (mipro.py, gepa.py, textgrad.py) supplies a `search`
(program, served, workdir, settings, metrics, budget) -> PeerResult; this
wraps it once: the task's LLM served on loopback, every other address
refused, the result turned into an Outcome. A peer run is not resumable
mid-way: an interrupted one starts again, a finished one is done.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from absl import logging

from optimas_jax.loop.harness import Harness, Outcome
from optimas_jax.peers import env
from optimas_jax.peers.program import PeerResult, PromptProgram
from optimas_jax.peers.settings import settings
from optimas_jax.system import derive_seed


@dataclasses.dataclass(frozen=True)
class PeerMethod:
  name: str
  search: Callable[..., PeerResult]
  logs_init: bool = False        # writes an "init" record itself (TextGrad does, with its val)
  iterates: bool = True
  resumable: bool = False

  def validate(self, config) -> None:
    """Start-up check of config.peers (before any model loads)."""
    settings(config)

  def optimize(self, harness: Harness) -> Outcome:
    from optimas_jax.peers.served import ServedModel
    task, config = harness.task, harness.config
    peer = settings(config)
    if task.llm is None:
      raise ValueError("the peers call the task's LLM through the server; this task has none "
                       "(config.system.llm is empty)")
    program = PromptProgram(task, harness.seed)
    harness.metrics.drop(lambda r: True)      # an interrupted peer run starts again
    served = ServedModel.start(task.llm, getattr(task.llm, "name", "local"),
                               seed=derive_seed(harness.seed, "served"),
                               max_tokens=peer.lm_max_tokens, temperature=peer.lm_temperature)
    started = time.time()
    try:
      with env.LoopbackOnly() as guard:
        if self.logs_init:
          harness.metrics.write({"event": "init", "val": float("nan"), "budget": 0})
        result = self.search(program, served, harness.workdir, peer, metrics=harness.metrics,
                             budget=harness.budget_cap)
      server_stats = served.stats()
    finally:
      served.close()
    parse = {"system_failures": program.component_failures(),
             "optimizer_calls": result.optimizer_parse.get("calls", 0),
             "optimizer_parse_failures": result.optimizer_parse.get("parse_failures", 0)}
    logging.info("%s seed %s: runs %d (refused %d) parse %s", self.name, harness.seed,
                 harness.budget_used, program.refused, parse)
    return Outcome(
        config=program.config(result.texts), iterations=len(result.history),
        history=result.history, wall_s=time.time() - started,
        detail={"peer": result.detail, "parse": parse, "refused_runs": program.refused,
                "invalid_candidate_runs": program.invalid, "served": server_stats,
                "outside_loopback": guard.outside})
