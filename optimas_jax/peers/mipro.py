"""DSPy MIPROv2 on the System's prompts: instructions only, or instructions and demos.

The System is a dspy.Module with one dspy.Predict per prompt component; its
few-shot demos (bootstrapped from the components' recorded inputs and
outputs) are appended to the component's prompt text, the only text a
component reads. Optimizer-LM replies that do not parse are counted
(OptimasAdapter).
"""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import numpy as np

from optimas_jax.metrics_log import MetricsLog
from optimas_jax.peers import env
from optimas_jax.peers.method import PeerMethod
from optimas_jax.peers.program import Gather, PeerResult, PromptProgram, record_best
from optimas_jax.peers.settings import PeerSettings


def _render_demos(instruction: str, demos: Sequence, fields: Sequence[str]) -> str:
  """The component's prompt text with DSPy demos appended (its only text input)."""
  if not demos:
    return instruction
  blocks = []
  for d in demos:
    d = d.toDict() if hasattr(d, "toDict") else dict(d)
    lines = [f"{f.replace('_', ' ').capitalize()}: {d[f]}" for f in fields
             if d.get(f) is not None]
    if lines:
      blocks.append("\n".join(lines))
  return instruction if not blocks else instruction + "\n\nExamples:\n\n" + "\n\n".join(blocks)


def _system_module(program: PromptProgram, gather: Gather):
  """The System as a dspy.Module: one dspy.Predict per prompt component."""
  dspy = env.require("dspy", what="MIPROv2")
  system = program.system

  class SystemProgram(dspy.Module):
    """Runs the optimas_jax System with the predictors' instructions (and demos) as prompts."""

    def __init__(self):
      super().__init__()
      self.component_names = list(program.prompts)
      for name in self.component_names:
        comp = system.components[name]
        sig = dspy.Signature(", ".join(comp.input_fields) + " -> " + ", ".join(comp.output_fields),
                             program.base[name])
        setattr(self, name, dspy.Predict(sig))

    def texts(self) -> dict[str, str]:
      out = {}
      for name in self.component_names:
        p = getattr(self, name)
        comp = system.components[name]
        out[name] = _render_demos(p.signature.instructions, p.demos,
                                  list(comp.input_fields) + list(comp.output_fields))
      return out

    def forward(self, **inputs):
      score, trace = gather.run_one({f: inputs[f] for f in system.input_fields}, self.texts())
      del score                      # scored by the metric, with the example's labels
      if trace is None or trace.failed:
        return dspy.Prediction(optimas_trace=trace)
      # What DSPy's bootstrapping reads: each predictor's inputs and outputs.
      if dspy.settings.trace is not None:
        for name in self.component_names:
          if name in trace.steps:
            step = trace.steps[name]
            dspy.settings.trace.append((getattr(self, name), dict(step.inputs),
                                        dspy.Prediction(**step.outputs)))
      context = trace.context()
      return dspy.Prediction(optimas_trace=trace,
                             **{f: context[f] for f in system.metric.fields})

  return SystemProgram()


def search(program: PromptProgram, served, workdir: pathlib.Path, peer: PeerSettings,
              with_demos: bool, metrics: MetricsLog, budget: int) -> PeerResult:
  dspy = env.require("dspy", workdir, "MIPROv2")
  from optimas_jax.peers.dspy_adapter import OptimasAdapter
  system = program.system
  gather = Gather(program)
  student = _system_module(program, gather)
  history: list = []
  best = {"val": -1.0}

  def metric(example, prediction, trace=None):
    del trace
    t = prediction.get("optimas_trace") if hasattr(prediction, "get") else None
    if t is None or t.failed:
      return system.metric.failure_value
    return float(system.metric.fn(example.toDict(), t.context()))

  train = [dspy.Example(**ex).with_inputs(*system.input_fields)
           for ex in program.task.splits["train"]]
  val = [dspy.Example(**ex).with_inputs(*system.input_fields)
         for ex in program.task.splits["val"]]
  demos = peer.mipro_demos if with_demos else 0
  minibatch = min(peer.mipro_minibatch, len(val))
  # MIPROv2 fixes its trials up front: as many as the budget pays for (the
  # initial full evaluation, then a minibatch per trial and a full evaluation
  # every `full_eval_steps`). It fails once every candidate combination has
  # had its full evaluation, so there are enough candidates for the trials.
  # It cannot be stopped exactly: it ends at its last trial, or at the cap
  # (runs past it are refused at once), and reports the runs it used.
  steps = peer.mipro_full_eval_steps
  trials = max(2, int((budget - len(val)) // (minibatch + len(val) / steps))) if budget else 20
  full_evals = -(-trials // steps) + 2
  candidates = max(peer.mipro_candidates,
                   full_evals if not demos else int(np.ceil(np.sqrt(full_evals))))
  adapter = OptimasAdapter(first_line=False)
  lm = served.dspy_lm(workdir, max_tokens=peer.lm_max_tokens, temperature=peer.lm_temperature)
  optimizer = dspy.MIPROv2(metric=metric, prompt_model=lm, task_model=lm, auto=None,
                           num_candidates=candidates, max_bootstrapped_demos=demos,
                           max_labeled_demos=demos, num_threads=peer.mipro_threads,
                           max_errors=10**6, seed=program.seed, verbose=False)
  with dspy.context(lm=lm, adapter=adapter):
    compiled = optimizer.compile(
        student, trainset=train, valset=val, num_trials=trials, minibatch=len(val) > minibatch,
        minibatch_size=minibatch, minibatch_full_eval_steps=steps,
        program_aware_proposer=False, data_aware_proposer=True, seed=program.seed)
  trial_logs = getattr(compiled, "trial_logs", {}) or {}
  # MIPROv2 counts its trial evaluations only; its bootstrapping runs came first.
  calls = [int(log.get("total_eval_calls_so_far", 0)) for log in trial_logs.values()]
  offset = max(0, system.counters.budget_used - max(calls, default=0))
  for i, log in sorted(trial_logs.items()):
    score = log.get("full_eval_score")
    if score is not None and score / 100 > best["val"]:     # DSPy's Evaluate: percent
      best["val"] = score / 100
      record_best(metrics, history, int(i), best["val"],
                   offset + int(log.get("total_eval_calls_so_far", 0)), int(i) > 1)
  return PeerResult(compiled.texts(), history, adapter.parse_stats(),
                    {"trials_planned": trials, "candidates": candidates,
                     "trials_logged": len(trial_logs),
                     "demos": {n: len(getattr(compiled, n).demos)
                               for n in compiled.component_names}})


INSTRUCTIONS = PeerMethod("mipro_instructions", functools.partial(search, with_demos=False),
                          logs_init=True)
FULL = PeerMethod("mipro", functools.partial(search, with_demos=True), logs_init=True)
