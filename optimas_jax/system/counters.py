"""Thread-safe counters of component calls and system runs, and the run budget.

The paper compares optimizers by the number of system runs they spend; every
part of the project reports these counters, so they are kept in one place and
can be saved to and restored from checkpoints.

The budget is defined once, here: full runs plus partial (`run_from` /
Monte-Carlo / proposal) runs, each counted when its work is done, failed or
not. Rollouts answered by a cache and evaluations in `unmetered()` (the test
set) are counted apart. With a cap set, `admit(n)` says how many of n runs
still fit; System runs only those and raises `BudgetSpent`, so every method
stops exactly at the cap, inside an iteration if need be.
"""

from __future__ import annotations

import collections
import contextlib
import threading


class BudgetSpent(RuntimeError):
  """The run budget (loop.budget_runs) is spent; the current work stops here."""


class Counters:
  """Counts of system runs, partial runs and per-component calls."""

  FIELDS = ("calls", "batches", "failures", "retries", "cache_hits")

  def __init__(self):
    self._lock = threading.Lock()
    self.system_runs = 0          # examples run through the whole system
    self.partial_runs = 0         # examples re-run from a component (run_from, proposals)
    self.unmetered_runs = 0       # runs outside the budget (test evaluation)
    self.budget_cap = 0           # 0: no cap
    self._unmetered = 0
    self.per_component = collections.defaultdict(lambda: dict.fromkeys(self.FIELDS, 0))

  def add(self, component: str, **counts: int) -> None:
    with self._lock:
      row = self.per_component[component]
      for name, value in counts.items():
        if name not in row:
          raise KeyError(f"unknown counter {name!r}; known: {self.FIELDS}")
        row[name] += value

  # -------------------------------------------------------------- budget

  @property
  def budget_used(self) -> int:
    return self.system_runs + self.partial_runs

  def set_budget_cap(self, cap: int) -> None:
    if cap < 0:
      raise ValueError(f"loop.budget_runs={cap}; use 0 (no cap) or a positive number of runs")
    self.budget_cap = int(cap)

  def admit(self, n: int) -> int:
    """How many of `n` runs fit under the cap (all of them without a cap)."""
    with self._lock:
      if self._unmetered or not self.budget_cap:
        return n
      return max(0, min(n, self.budget_cap - self.budget_used))

  @contextlib.contextmanager
  def unmetered(self):
    """Runs inside are counted as `unmetered_runs`, outside the budget and its cap."""
    with self._lock:
      self._unmetered += 1
    try:
      yield
    finally:
      with self._lock:
        self._unmetered -= 1

  def add_runs(self, *, full: int = 0, partial: int = 0) -> None:
    with self._lock:
      if self._unmetered:
        self.unmetered_runs += full + partial
      else:
        self.system_runs += full
        self.partial_runs += partial

  # --------------------------------------------------------- checkpoints

  def snapshot(self) -> dict:
    with self._lock:
      return {
          "system_runs": self.system_runs,
          "partial_runs": self.partial_runs,
          "unmetered_runs": self.unmetered_runs,
          "budget_cap": self.budget_cap,
          "components": {k: dict(v) for k, v in sorted(self.per_component.items())},
      }

  def restore(self, snapshot: dict) -> None:
    with self._lock:
      self.system_runs = int(snapshot["system_runs"])
      self.partial_runs = int(snapshot["partial_runs"])
      self.unmetered_runs = int(snapshot.get("unmetered_runs", 0))
      self.budget_cap = int(snapshot.get("budget_cap", 0))
      self.per_component.clear()
      for name, row in snapshot["components"].items():
        self.per_component[name].update({k: int(v) for k, v in row.items()})

  def reset(self) -> None:
    """Zero every count and the cap (a new run on an already built system)."""
    self.restore({"system_runs": 0, "partial_runs": 0, "components": {}})
