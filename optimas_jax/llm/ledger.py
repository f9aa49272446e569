"""Who spent what: LLM calls, tokens and dollars per system component.

  with ledger.component("answer"):
    llm.generate(requests, params)          # recorded under "answer"
  llm.ledger.as_dict()["answer"]["cost_usd"]

The component name lives in a ``ContextVar``, so each thread (and each
asyncio task) has its own; backends read it in the calling thread, before
handing requests to their worker pools.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Mapping

from optimas_jax.core import billing

# The billing context lives at the bottom (core/billing.py) so `system` can set it
# without importing llm; re-exported here for callers of the ledger.
component = billing.component
current_component = billing.current_component
DEFAULT_COMPONENT = billing.DEFAULT_COMPONENT


@dataclasses.dataclass
class Entry:
  calls: int = 0               # answered by the backend (billed)
  cache_hits: int = 0          # answered from the response cache (free)
  prompt_tokens: int = 0
  completion_tokens: int = 0
  cost_usd: float = 0.0


class Ledger:
  """Thread-safe per-component counters; cost from ``prices``.

  ``prices`` maps a model name to ($ per 1M prompt tokens, $ per 1M
  completion tokens). Without a table every call costs 0 (a local model).
  """

  def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None):
    self.prices = {m: (float(p), float(c)) for m, (p, c) in (prices or {}).items()}
    self._lock = threading.Lock()
    self._entries: dict[str, Entry] = {}

  def __getstate__(self):
    return {"prices": self.prices, "entries": self.as_dict()}

  def __setstate__(self, state):
    self.__init__(state["prices"])
    self._entries = {k: Entry(**v) for k, v in state["entries"].items()}

  def state_dict(self) -> dict:
    """{"entries": {component: counters}} (JSON) to resume from; prices come from the config."""
    return {"entries": self.as_dict()}

  def load_state_dict(self, state: dict) -> None:
    """Replaces every component's counters with those of ``state`` (from ``state_dict``)."""
    fields = {f.name for f in dataclasses.fields(Entry)}
    entries = {}
    for name, row in state.get("entries", {}).items():
      unknown = sorted(set(row) - fields)
      if unknown:
        raise ValueError(f"Ledger state entry {name!r} has unknown counters {unknown}; "
                         f"expected a subset of {sorted(fields)} (from Ledger.state_dict())")
      entries[name] = Entry(**row)
    with self._lock:
      self._entries = entries

  def check_priced(self, model: str) -> None:
    """Fails early when a price table exists but lacks ``model`` (else its cost reads 0)."""
    if self.prices and model not in self.prices:
      raise ValueError(f"Ledger prices have no entry for model {model!r} (known: "
                       f"{sorted(self.prices)}); add {model!r}: ($/1M prompt, $/1M completion)")

  def record(self, model: str, prompt_tokens: int, completion_tokens: int, *,
             component: str | None = None, cached: bool = False) -> None:
    """One call; cache hits count as calls of their own and cost nothing."""
    name = component or current_component()
    with self._lock:
      e = self._entries.setdefault(name, Entry())
      if cached:
        e.cache_hits += 1
        return
      p, c = self.prices.get(model, (0.0, 0.0))
      e.calls += 1
      e.prompt_tokens += prompt_tokens
      e.completion_tokens += completion_tokens
      e.cost_usd += (prompt_tokens * p + completion_tokens * c) / 1e6

  def as_dict(self) -> dict[str, dict]:
    """{component: {calls, cache_hits, prompt_tokens, completion_tokens, cost_usd}}."""
    with self._lock:
      return {k: dataclasses.asdict(e) for k, e in sorted(self._entries.items())}

  def total(self) -> dict:
    """The same counters summed over components."""
    out = dataclasses.asdict(Entry())
    for row in self.as_dict().values():
      for k, v in row.items():
        out[k] += v
    return out
