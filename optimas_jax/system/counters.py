"""Thread-safe counters of component calls and system runs.

The paper compares optimizers by the number of full system runs they spend;
every part of the project reports these counters, so they are kept in one
place and can be saved to and restored from checkpoints.
"""

from __future__ import annotations

import collections
import threading


class Counters:
  """Counts of system runs, partial runs and per-component calls."""

  FIELDS = ("calls", "batches", "failures", "retries", "cache_hits")

  def __init__(self):
    self._lock = threading.Lock()
    self.system_runs = 0          # examples run through the whole system
    self.partial_runs = 0         # examples re-run from a component (run_from)
    self.per_component = collections.defaultdict(lambda: dict.fromkeys(self.FIELDS, 0))

  def add(self, component: str, **counts: int) -> None:
    with self._lock:
      row = self.per_component[component]
      for name, value in counts.items():
        if name not in row:
          raise KeyError(f"unknown counter {name!r}; known: {self.FIELDS}")
        row[name] += value

  def add_runs(self, *, full: int = 0, partial: int = 0) -> None:
    with self._lock:
      self.system_runs += full
      self.partial_runs += partial

  def snapshot(self) -> dict:
    with self._lock:
      return {
          "system_runs": self.system_runs,
          "partial_runs": self.partial_runs,
          "components": {k: dict(v) for k, v in sorted(self.per_component.items())},
      }

  def restore(self, snapshot: dict) -> None:
    with self._lock:
      self.system_runs = int(snapshot["system_runs"])
      self.partial_runs = int(snapshot["partial_runs"])
      self.per_component.clear()
      for name, row in snapshot["components"].items():
        self.per_component[name].update({k: int(v) for k, v in row.items()})
