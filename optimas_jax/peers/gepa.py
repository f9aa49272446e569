"""GEPA (gepa.optimize) with a GEPAAdapter over the System's prompt components.

Reflections without a ``` block are used whole by GEPA and counted here.
"""

from __future__ import annotations

import pathlib
import threading
import time

from optimas_jax.metrics_log import MetricsLog
from optimas_jax.peers import env
from optimas_jax.peers.method import PeerMethod
from optimas_jax.peers.program import PeerResult, PromptProgram, deadline, feedback, record_best
from optimas_jax.peers.settings import PeerSettings


class SystemGEPAAdapter:
  """gepa's adapter interface over the System's prompt components (a candidate = their texts)."""

  propose_new_texts = None            # GEPA's own reflective proposer, with the served LM

  def __init__(self, program: PromptProgram):
    self.program = program

  def evaluate(self, batch, candidate, capture_traces=False):
    from gepa import EvaluationBatch
    scores, traces = self.program.run(batch, candidate)
    outputs = [None if t is None or t.failed else
               {f: t.context()[f] for f in self.program.system.metric.fields} for t in traces]
    trajectories = None
    if capture_traces:
      trajectories = [{"example": ex, "trace": t, "score": float(s)}
                      for ex, t, s in zip(batch, traces, scores)]
    return EvaluationBatch(outputs=outputs, scores=[float(s) for s in scores],
                           trajectories=trajectories)

  def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
    system = self.program.system
    out = {}
    for name in components_to_update:
      records = []
      for traj in eval_batch.trajectories or []:
        trace = traj["trace"]
        if trace is None or name not in trace.steps:
          continue
        step = trace.steps[name]
        records.append({"Inputs": {k: str(v)[:600] for k, v in step.inputs.items()},
                        "Generated Outputs": {k: str(v)[:400] for k, v in step.outputs.items()},
                        "Feedback": feedback(system, traj["example"], trace, traj["score"])})
      out[name] = records
    return out


class _FenceCounter:
  """Wraps GEPA's reflection LM: counts replies with no ``` block (GEPA then uses them whole)."""

  def __init__(self, lm):
    self.lm, self.calls, self.misses = lm, 0, 0
    self._lock = threading.Lock()

  def __call__(self, prompt):
    text = self.lm(prompt)
    with self._lock:
      self.calls += 1
      self.misses += int(text.count("```") < 2)
    return text

  def stats(self) -> dict[str, int]:
    return {"calls": self.calls, "parse_failures": self.misses}


class _BudgetStopper:
  """Stops GEPA when the run budget is spent or the wall-clock limit has passed."""

  def __init__(self, program: PromptProgram, deadline: float):
    self.program, self.deadline = program, deadline
    self.stopped_by = ""

  def __call__(self, gepa_state) -> bool:
    del gepa_state
    if not self.program.budget_left:
      self.stopped_by = "budget"
    elif time.time() > self.deadline:
      self.stopped_by = "max_wall_s"
    return bool(self.stopped_by)


def search(program: PromptProgram, served, workdir: pathlib.Path, peer: PeerSettings,
             metrics: MetricsLog, budget: int) -> PeerResult:
  gepa = env.require("gepa", what="GEPA")
  reflection = _FenceCounter(served.gepa_lm(max_tokens=peer.gepa_max_tokens,
                                            temperature=peer.lm_temperature))
  train, val = program.task.splits["train"], program.task.splits["val"]
  stopper = _BudgetStopper(program, deadline(peer))
  result = gepa.optimize(
      seed_candidate=program.texts(), trainset=list(train), valset=list(val),
      adapter=SystemGEPAAdapter(program), reflection_lm=reflection,
      reflection_minibatch_size=peer.gepa_minibatch,
      max_metric_calls=budget or None, stop_callbacks=[stopper],
      run_dir=None, seed=program.seed, display_progress_bar=False,
      raise_on_exception=False, perfect_score=1.0, skip_perfect_score=True)
  history: list = []
  best = -1.0
  for i, (score, calls) in enumerate(zip(result.val_aggregate_scores,
                                         result.discovery_eval_counts)):
    if score > best:
      best = score
      record_best(metrics, history, i, float(score), int(calls), i > 0)
  return PeerResult(dict(result.best_candidate), history, reflection.stats(),
                    {"candidates": len(result.candidates),
                     "gepa_metric_calls": result.total_metric_calls,
                     "stopped_by": stopper.stopped_by or "gepa"})


METHOD = PeerMethod("gepa", search, logs_init=True)
