"""What every method runs inside: one budget, one evaluation rule, one summary.

A Method (loop/method.py) optimizes a run of the Harness and returns an
Outcome; the harness owns what must be the same for every method, so a
comparison compares methods and nothing else:

- the budget: `loop.budget_runs` system runs (full + partial) caps the
  System's counters before the method starts (system/counters.py);
- evaluation: `evaluate(split, values, repeats)` with seeds from (seed,
  split, repeat), the validation memo keyed by the configuration's
  variable hashes, and the test evaluation outside the budget;
- records: metrics.jsonl (one writer), summary.json (one schema, below) and
  final_config/;
- done is done for comparisons: a workdir with summary.json is not run again.

summary.json: method, seed, test, test_extra, val, iterations, budget_runs,
budget_cap, cut_iteration_runs, test_runs, wall_s, config, counters,
history, llm_usage, detail (what only this method reports).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from optimas_jax.core.keys import canonical_json
from optimas_jax.core.mesh import is_writer
from optimas_jax.core.seeds import derive_seed
from optimas_jax.metrics_log import MetricsLog
from optimas_jax.system import SystemConfig

SUMMARY_KEYS = ("method", "seed", "test", "test_extra", "val", "iterations", "budget_runs",
                "budget_cap", "cut_iteration_runs", "test_runs", "wall_s", "config",
                "counters", "history", "llm_usage", "detail")


@dataclasses.dataclass
class Outcome:
  """What a method hands back: the configuration it deploys and how it got there."""

  config: SystemConfig
  iterations: int                      # optimization steps taken (0: none)
  history: list[dict]                  # one record per step: accepted, val, budget, ...
  wall_s: float                        # the method's own time, resumed parts included
  cut_iteration_runs: int = 0          # runs spent in a step the budget cut (never validated)
  val: float | None = None             # the deployed config's validation mean, if known
  detail: dict = dataclasses.field(default_factory=dict)


class Harness:
  """One run of one method on one task: budget, evaluation, records."""

  def __init__(self, task, config, workdir: str | pathlib.Path):
    self.task, self.config = task, config
    self.system = task.system
    self.seed = int(config.seed)
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.metrics = MetricsLog(self.workdir / "metrics.jsonl")
    self.counters = self.system.counters
    self.counters.set_budget_cap(int(config.loop.budget_runs))
    self.test_repeats = int(config.loop.test_repeats)

  @property
  def summary_path(self) -> pathlib.Path:
    return self.workdir / "summary.json"

  def done(self) -> dict | None:
    """The summary of a finished run in this workdir, else None."""
    return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else None

  # ------------------------------------------------------------ budget

  @property
  def budget_used(self) -> int:
    return self.counters.budget_used

  @property
  def budget_cap(self) -> int:
    return self.counters.budget_cap

  def budget_left(self) -> bool:
    cap = self.counters.budget_cap
    return not cap or self.budget_used < cap

  # ------------------------------------------------------------ evaluation

  def evaluate(self, split: str, values: SystemConfig, repeats: int = 1
               ) -> tuple[np.ndarray, dict]:
    """Per-example scores (mean over `repeats` seeded passes) and the task's extra metrics."""
    examples = self.task.splits[split]
    scores, extra = [], {}
    for r in range(repeats):
      result = self.system.run(examples, values, seed=derive_seed(self.seed, split, r))
      scores.append(self.system.evaluate(examples, result))
      for name, fn in self.task.extra_metrics.items():
        extra.setdefault(name, []).append(fn(examples, result))
      extra.setdefault("failed", []).append(result.num_failed)
    return np.mean(scores, axis=0), {k: float(np.mean(v)) for k, v in extra.items()}

  def val_scores(self, values: SystemConfig, repeats: int, memo: dict) -> np.ndarray:
    """Per-example validation scores, memoised in `memo` by the variable hashes (the
    method persists `memo`, so a resumed run does not pay for them again)."""
    key = canonical_json({n: values.variable_hash(n) for n in values})
    if key not in memo:
      memo[key] = self.evaluate("val", values, repeats)[0].tolist()
    return np.asarray(memo[key])

  # ------------------------------------------------------------ the end

  def finish(self, method: str, outcome: Outcome) -> dict:
    """Test (and, if the method did not, validation) outside the budget; summary.json."""
    counters = self.counters.snapshot()
    with self.counters.unmetered():
      val = outcome.val
      if val is None:
        val = float(self.evaluate("val", outcome.config)[0].mean())
      before = self.counters.snapshot()["unmetered_runs"]
      test_scores, extra = self.evaluate("test", outcome.config, self.test_repeats)
      test_runs = self.counters.snapshot()["unmetered_runs"] - before
    summary: dict[str, Any] = {
        "method": method, "seed": self.seed, "test": float(test_scores.mean()),
        "test_extra": extra, "val": float(val), "iterations": outcome.iterations,
        "budget_runs": counters["system_runs"] + counters["partial_runs"],
        "budget_cap": self.counters.budget_cap,
        "cut_iteration_runs": outcome.cut_iteration_runs, "test_runs": test_runs,
        "wall_s": outcome.wall_s, "config": outcome.config.json_values(),
        "counters": counters, "history": outcome.history, "llm_usage": self.task.usage(),
        "detail": outcome.detail,
    }
    assert tuple(summary) == SUMMARY_KEYS
    if is_writer():
      outcome.config.save(self.workdir / "final_config")
      tmp = self.summary_path.with_suffix(".json.tmp")
      tmp.write_text(json.dumps(summary, indent=2, default=float))
      tmp.replace(self.summary_path)           # atomic: a crash never leaves half a summary
    return summary


def run(method, task, config, workdir, reuse_summary: bool = False) -> dict:
  """Runs `method` on `task` in `workdir` and writes its summary.

  A method resumes from its own checkpoints in `workdir`. `reuse_summary`
  (the comparisons): a workdir that already holds summary.json is done and
  its summary is returned as is.
  """
  harness = Harness(task, config, workdir)
  finished = harness.done() if reuse_summary else None
  if finished is not None:
    return finished
  return harness.finish(method.name, method.optimize(harness))
