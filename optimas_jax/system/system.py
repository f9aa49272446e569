"""System: a DAG of components, run batch-first in a deterministic order."""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from optimas_jax.system.component import Component
from optimas_jax.system.config import SystemConfig
from optimas_jax.system.counters import BudgetSpent, Counters
from optimas_jax.system.runners import LocalRunner, Runner
from optimas_jax.system.trace import Trace
from optimas_jax.core.seeds import derive_seed


class SystemDefinitionError(ValueError):
  """The components do not form a valid system."""


@dataclasses.dataclass(frozen=True)
class Metric:
  """The global task metric R(example, prediction) for one example.

  `fields` are the prediction fields it reads (checked against the system at
  construction); `failure_value` is the score of a failed example.
  """

  fn: Callable[[Mapping[str, Any], Mapping[str, Any]], float]
  fields: tuple[str, ...]
  name: str = "score"
  failure_value: float = 0.0

  def __post_init__(self):
    object.__setattr__(self, "fields", tuple(self.fields))


@dataclasses.dataclass
class RunResult:
  """Per-example predictions and traces, in input order, plus run statistics."""

  predictions: list[dict | None]   # None where the example failed
  traces: list[Trace]

  @property
  def num_failed(self) -> int:
    return sum(t.failed for t in self.traces)

  def failures(self) -> list[tuple[int, str]]:
    return [(t.index, str(t.failure)) for t in self.traces if t.failed]


class System:
  """Components in declaration order; the DAG follows from the field names.

  Args:
    components: the steps, in declaration order (ties in the topological
      order are broken by it).
    input_fields: fields every example provides to the system.
    metric: the global metric; its `fields` must be produced by the system.
  """

  def __init__(self, components: Sequence[Component], input_fields: Sequence[str],
               metric: Metric, counters: Counters | None = None,
               runner: Runner | None = None):
    self.components = {c.name: c for c in components}
    if len(self.components) != len(components):
      names = [c.name for c in components]
      raise SystemDefinitionError(
          f"duplicate component names: {sorted({n for n in names if names.count(n) > 1})}")
    self.input_fields = tuple(input_fields)
    self.metric = metric
    self.counters = counters or Counters()
    # Where batches run (system/runners.py); the run's result does not depend on it.
    self.runner = runner or LocalRunner()
    self.producer = self._producers()
    self.parents = {c.name: sorted({self.producer[f] for f in c.input_fields
                                    if f in self.producer}, key=self._decl_index)
                    for c in components}
    self.order = self._topological_order()
    self._check_metric()

  # ------------------------------------------------------------ structure

  def _decl_index(self, name: str) -> int:
    return list(self.components).index(name)

  def _producers(self) -> dict[str, str]:
    producer: dict[str, str] = {}
    for c in self.components.values():
      for f in c.output_fields:
        if f in self.input_fields:
          raise SystemDefinitionError(
              f"component {c.name!r} writes {f!r}, which is a system input field; "
              "rename the output")
        if f in producer:
          raise SystemDefinitionError(
              f"field {f!r} is written by both {producer[f]!r} and {c.name!r}; "
              "each field must have exactly one producer")
        producer[f] = c.name
    for c in self.components.values():
      missing = [f for f in c.input_fields if f not in producer and f not in self.input_fields]
      if missing:
        raise SystemDefinitionError(
            f"component {c.name!r} reads {missing}, which no component produces and which "
            f"are not system inputs {list(self.input_fields)}")
    return producer

  def _topological_order(self) -> tuple[str, ...]:
    """Kahn's algorithm; among ready components the earliest declared goes first."""
    indegree = {n: len(p) for n, p in self.parents.items()}
    children = {n: [] for n in self.components}
    for n, ps in self.parents.items():
      for p in ps:
        children[p].append(n)
    ready = [self._decl_index(n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    names = list(self.components)
    order = []
    while ready:
      n = names[heapq.heappop(ready)]
      order.append(n)
      for ch in children[n]:
        indegree[ch] -= 1
        if indegree[ch] == 0:
          heapq.heappush(ready, self._decl_index(ch))
    if len(order) != len(names):
      stuck = [n for n in names if n not in order]
      raise SystemDefinitionError(f"the components form a cycle through {stuck}")
    return tuple(order)

  def _check_metric(self):
    known = set(self.producer) | set(self.input_fields)
    unknown = [f for f in self.metric.fields if f not in known]
    if unknown:
      raise SystemDefinitionError(
          f"metric {self.metric.name!r} reads {unknown}, which the system does not produce; "
          f"produced fields: {sorted(self.producer)}")

  def downstream(self, name: str) -> tuple[str, ...]:
    """`name` and every component that depends on it, in topological order."""
    if name not in self.components:
      raise KeyError(f"no component {name!r}; components: {list(self.order)}")
    reached = {name}
    for n in self.order:
      if any(p in reached for p in self.parents[n]):
        reached.add(n)
    return tuple(n for n in self.order if n in reached)

  @property
  def specs(self) -> dict:
    """The variable spec of every optimizable component, in topological order."""
    return {n: self.components[n].variable for n in self.order
            if self.components[n].variable is not None}

  def default_config(self) -> SystemConfig:
    return SystemConfig.defaults(self.specs)

  # ------------------------------------------------------------ running

  def _check_examples(self, examples: Sequence[Mapping]):
    for i, ex in enumerate(examples):
      missing = [f for f in self.input_fields if f not in ex]
      if missing:
        raise KeyError(f"example {i} lacks system input fields {missing}")

  def run(self, examples: Sequence[Mapping], config: SystemConfig, seed: int = 0,
          example_seeds: Sequence[int] | None = None) -> RunResult:
    """Runs every example through the whole DAG; results are in input order.

    Example i's randomness comes from ``derive_seed(seed, "example", i)``, or
    from ``example_seeds[i]`` when given (a caller whose batches are formed
    by thread timing keys each example by what it is, not where it sits).
    """
    self._check_examples(examples)
    if example_seeds is None:
      example_seeds = [derive_seed(seed, "example", i) for i in range(len(examples))]
    elif len(example_seeds) != len(examples):
      raise ValueError(f"{len(example_seeds)} example_seeds for {len(examples)} examples")
    traces = [Trace(i, int(s), dict(ex), {})
              for i, (ex, s) in enumerate(zip(examples, example_seeds))]
    admitted = self.counters.admit(len(traces))
    self._run_components(self.order, traces[:admitted], config, sample=None)
    self.counters.add_runs(full=admitted)
    self._stop_if_cut(admitted, len(traces), "run")
    return self._result(traces)

  def pay_partial(self, n: int) -> None:
    """Counts `n` partial runs done outside run/rerun (e.g. a component's
    propose() call); raises BudgetSpent, before any work, when they do not fit."""
    if self.counters.admit(n) < n:
      raise BudgetSpent(f"proposals: {n} runs do not fit in the budget of "
                        f"{self.counters.budget_cap} system runs")
    self.counters.add_runs(partial=n)

  def _stop_if_cut(self, admitted: int, n: int, what: str) -> None:
    # The runs that fit were done and counted; the rest would exceed the cap.
    if admitted < n:
      raise BudgetSpent(f"{what}: {admitted} of {n} runs fit in the budget of "
                        f"{self.counters.budget_cap} system runs")

  def run_from(self, component: str, traces: Sequence[Trace], config: SystemConfig,
               sample: int | str | Sequence[int | str] | None = None) -> RunResult:
    """Re-runs `component` and everything downstream of it on recorded traces.

    Upstream and parallel components are held fixed at their recorded
    outputs. `sample=None` reuses each trace's seeds, so with an unchanged
    configuration the result equals the original run; `sample=s` draws the
    s-th independent Monte-Carlo sample.
    """
    return self.rerun(self.downstream(component), traces, config, sample)

  def run_after(self, component: str, traces: Sequence[Trace], config: SystemConfig,
                sample: int | str | Sequence[int | str] | None = None) -> RunResult:
    """Re-runs only what is strictly downstream of `component`.

    `component`'s recorded (possibly substituted) outputs are held fixed:
    this scores a candidate output of `component` by a Monte-Carlo rollout.
    """
    return self.rerun(self.downstream(component)[1:], traces, config, sample)

  def rerun(self, names: Sequence[str], traces: Sequence[Trace], config: SystemConfig,
            sample: int | str | Sequence[int | str] | None = None) -> RunResult:
    """Re-runs the components `names` (in topological order), the rest held fixed.

    `sample` may also give one sample index per trace, so many Monte-Carlo
    samples of many examples go through each component as a single batch.
    """
    rerun = [n for n in self.order if n in set(names)]
    if sample is not None and not isinstance(sample, (int, np.integer, str)):
      if len(sample) != len(traces):
        raise ValueError(f"{len(sample)} sample indices for {len(traces)} traces")
      sample = list(sample)
    fresh = []
    for t in traces:
      kept = {n: s for n, s in t.steps.items() if n not in rerun}
      # An example that failed outside the re-run part cannot be re-run: it
      # keeps its failure (and is scored as one) rather than being dropped.
      kept_failure = t.failure if t.failure and t.failure.component not in rerun else None
      fresh.append(Trace(t.index, t.seed, dict(t.example), kept, kept_failure))
    # Every re-run example is paid for, whether it then fails or not; one
    # that failed upstream does no work here and costs nothing.
    work = [i for i, t in enumerate(fresh) if not t.failed]
    admitted = self.counters.admit(len(work))
    run_now = [fresh[i] for i in work[:admitted]]
    if isinstance(sample, list):
      sample = [sample[i] for i in work[:admitted]]
    self._run_components(rerun, run_now, config, sample=sample)
    self.counters.add_runs(partial=admitted)
    self._stop_if_cut(admitted, len(work), "rerun")
    return self._result(fresh)

  def _run_components(self, names, traces: list[Trace], config: SystemConfig, sample):
    if sample is None or isinstance(sample, (int, np.integer, str)):
      samples = [sample] * len(traces)
    else:
      if len(sample) != len(traces):
        raise ValueError(f"{len(sample)} sample indices for {len(traces)} traces")
      samples = list(sample)
    if traces:
      self.runner.run(self, tuple(names), traces, config, samples)

  def _result(self, traces: list[Trace]) -> RunResult:
    preds = [None if t.failed else t.context() for t in traces]
    return RunResult(preds, traces)

  def evaluate(self, examples: Sequence[Mapping], result: RunResult) -> np.ndarray:
    """The metric per example (failed examples score `metric.failure_value`)."""
    if len(examples) != len(result.traces):
      raise ValueError(f"{len(examples)} examples but {len(result.traces)} traces")
    scores = np.empty(len(examples), dtype=np.float64)
    for i, (ex, pred) in enumerate(zip(examples, result.predictions)):
      scores[i] = self.metric.failure_value if pred is None else float(self.metric.fn(ex, pred))
    return scores
