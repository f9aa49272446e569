"""The peers' shared view of a task: its prompt components as texts, counted runs.

The paper's peers (mipro.py, gepa.py, textgrad.py) optimize the task's
prompt components (its `Prompt` variables; every other variable stays at its
default: these libraries optimize text).

What every method shares:
- The system: a peer's candidate prompts run through the task's own System
  (the same components, prompt format, parsing, decoding and per-example
  seeds as Optimas's runs). MIPROv2 sees the System as a dspy.Module with one
  dspy.Predict per prompt component; its few-shot demos (bootstrapped from
  the components' recorded inputs and outputs) are appended to the
  component's prompt text, the only text a component reads.
- The LLM: the peers' own calls (MIPROv2's proposer, GEPA's reflection,
  TextGrad's gradients and updates) go to the task's model served by
  `optimas_jax.llm.serve` on loopback (in-process, over the same weights),
  and nothing else: a run outside loopback is refused (env.LoopbackOnly).
- The budget: one system run is one example through the whole System (a
  DSPy metric call on a program run, a GEPA metric call, a TextGrad forward
  pass), counted by `system.counters`. Once `loop.budget_runs` is spent,
  further runs are refused (scored as failures, never run), so no method
  runs past the cap; `detail.refused_runs` says how many a peer asked for beyond it.
  A candidate the System refuses (an empty instruction) scores every example
  as a failure without running (`detail.invalid_candidate_runs`).
  Test (and the reported validation) evaluations are outside the budget, as
  for Optimas.
- Parse failures: the System's component failures during the budget, and
  the optimizer LM's replies that did not parse (MIPROv2: OptimasAdapter
  parse errors; GEPA: reflections without a ``` block, used whole; TextGrad:
  updates without <IMPROVED_VARIABLE> tags, step skipped), in summary.json's
  detail.parse.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import threading
import time
from typing import Mapping, Sequence

import numpy as np
from absl import logging

from optimas_jax.core.keys import canonical_json
from optimas_jax.metrics_log import MetricsLog
from optimas_jax.peers.settings import PeerSettings
from optimas_jax.system import Prompt, SystemConfig, VariableError, derive_seed


class PromptProgram:
  """The peers' view of a task: its prompt components as named texts; counted runs.

  `run(examples, texts)` runs the System with those prompt texts (the rest
  of the configuration at its defaults) and returns per-example scores and
  traces; past the budget cap an example is refused (score =
  `metric.failure_value`, trace None) instead of run.
  """

  def __init__(self, task, seed: int):
    self.task, self.system, self.seed = task, task.system, seed
    self.base = self.system.default_config()
    self.prompts = [n for n, s in self.system.specs.items() if isinstance(s, Prompt)]
    if not self.prompts:
      raise ValueError("the task's System has no Prompt variables; the peers (DSPy, GEPA, "
                       "TextGrad) optimize prompt text only")
    self.refused = 0
    self.invalid = 0                       # examples of candidates the System refused
    self._repeats: collections.Counter = collections.Counter()   # (example, texts) -> runs so far
    self._lock = threading.Lock()

  def texts(self, config: SystemConfig | None = None) -> dict[str, str]:
    config = config or self.base
    return {n: config[n] for n in self.prompts}

  def config(self, texts: Mapping[str, str]) -> SystemConfig:
    return self.base.override(**{n: texts[n] for n in self.prompts if n in texts})

  @property
  def budget_left(self) -> bool:
    return self.system.counters.admit(1) > 0

  def run(self, examples: Sequence[dict], texts: Mapping[str, str], score: bool = True):
    """(scores (n,), traces (None where refused)) of `examples` under `texts`.

    `score=False` for inputs without labels (DSPy's forward): scores stay at
    the failure value and the caller's metric scores the traces.
    """
    failure = self.system.metric.failure_value
    try:
      config = self.config(texts)
    except VariableError as e:
      # A proposal the System cannot take (e.g. GEPA reflecting an empty
      # instruction): every example is a counted failure; nothing ran, so
      # nothing is charged to the budget.
      with self._lock:
        self.invalid += len(examples)
      logging.warning("peer candidate refused, scored as %d failures: %s", len(examples), e)
      return np.full(len(examples), failure, np.float64), [None] * len(examples)
    with self._lock:                       # one batch at a time on the local model
      admitted = self.system.counters.admit(len(examples))
      self.refused += len(examples) - admitted
      scores = np.full(len(examples), failure, np.float64)
      traces: list = [None] * len(examples)
      if admitted:
        seeds = [self._example_seed(ex, texts) for ex in examples[:admitted]]
        result = self.system.run(list(examples[:admitted]), config, example_seeds=seeds)
        if score:
          scores[:admitted] = self.system.evaluate(list(examples[:admitted]), result)
        traces[:admitted] = result.traces
    return scores, traces

  def _example_seed(self, example: Mapping, texts: Mapping[str, str]) -> int:
    """The sampling seed of one run of `example` under `texts` (call under the lock).

    Keyed by the example itself, not by its batch or call number: DSPy's
    threads and GEPA's minibatches form batches by timing, and a seed that
    followed them made two runs of one config differ. Every candidate's
    first run of an example shares that example's seed (common random
    numbers, as in Optimas's validation); a repeat of the same candidate on
    the same example draws the next one.
    """
    example_key = canonical_json(example)
    texts_key = canonical_json({n: texts.get(n) for n in self.prompts})
    repeat = self._repeats[(example_key, texts_key)]
    self._repeats[(example_key, texts_key)] += 1
    return derive_seed(self.seed, "peer_example", example_key, repeat)

  def component_failures(self) -> int:
    components = self.system.counters.snapshot()["components"]
    return int(sum(row["failures"] for row in components.values()))


class Gather:
  """Gathers concurrent single-example runs (DSPy's threads) into System batches."""

  def __init__(self, program: PromptProgram, window_s: float = 0.05, max_batch: int = 16):
    self.program, self.window_s, self.max_batch = program, window_s, max_batch
    self._pending: list = []
    self._lock = threading.Lock()
    self._leader = False

  def run_one(self, example: dict, texts: Mapping[str, str]):
    future = concurrent.futures.Future()
    with self._lock:
      self._pending.append((canonical_json(texts), dict(texts), example, future))
      lead, self._leader = not self._leader, True
    if lead:
      time.sleep(self.window_s)
      with self._lock:
        batch, self._pending, self._leader = self._pending, [], False
      groups = collections.defaultdict(list)
      for key, texts_, ex, fut in batch:
        groups[key].append((texts_, ex, fut))
      for items in groups.values():
        for start in range(0, len(items), self.max_batch):
          chunk = items[start:start + self.max_batch]
          try:
            scores, traces = self.program.run([ex for _, ex, _ in chunk], chunk[0][0],
                                              score=False)
            for (_, _, fut), s, t in zip(chunk, scores, traces):
              fut.set_result((float(s), t))
          except Exception as e:  # pylint: disable=broad-except
            for _, _, fut in chunk:
              fut.set_exception(e)
    return future.result()


@dataclasses.dataclass
class PeerResult:
  texts: dict[str, str]                          # the final prompt of each component
  history: list[dict]                            # one record per accepted improvement
  optimizer_parse: dict[str, int]                # the optimizer LM's calls / parse failures
  detail: dict = dataclasses.field(default_factory=dict)


def record_best(metrics: MetricsLog, history: list, iteration: int, val: float, budget: int,
                 accepted: bool, component: str = "prompts") -> None:
  metrics.write({"event": "iteration", "iteration": iteration, "component": component,
                 "val": val, "budget": budget, "accepted": accepted})
  history.append({"iteration": iteration, "component": component, "accepted": accepted,
                  "val": val, "budget": budget})


def feedback(system, example: dict, trace, score: float) -> str:
  """What the metric says about one example's final output (GEPA feedback, TextGrad outcome)."""
  if trace is None:
    return "Not run: the budget of system runs was spent."
  if trace.failed:
    return f"The system failed: {trace.failure}. Score {score:.2f}."
  context = trace.context()
  produced = {f: context[f] for f in system.metric.fields}
  gold = {k: v for k, v in example.items() if k not in system.input_fields}
  return (f"Final output: {json.dumps(produced, default=str)[:400]}. Expected: "
          f"{json.dumps(gold, default=str)[:300]}. Score ({system.metric.name}): {score:.2f}.")


def deadline(peer: PeerSettings) -> float:
  """When the peer's wall-clock limit (`peers.max_wall_s`, 0: none) runs out."""
  return time.time() + peer.max_wall_s if peer.max_wall_s > 0 else float("inf")
