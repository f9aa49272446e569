"""A bounded per-component replay buffer of preference groups."""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from optimas_jax.collect.preferences import PreferenceGroup


class ReplayBuffer:
  """Keeps the newest `capacity` pairs' worth of groups for each component.

  Capacity counts preference pairs (the reference keeps 100 pairs), so a
  group with many candidates takes more room than a group of two.
  """

  def __init__(self, capacity_pairs: int):
    if capacity_pairs <= 0:
      raise ValueError(f"replay capacity_pairs must be > 0, got {capacity_pairs}")
    self.capacity_pairs = capacity_pairs
    self._groups: dict[str, collections.deque] = collections.defaultdict(collections.deque)

  def add(self, groups: Sequence[PreferenceGroup]) -> None:
    for g in groups:
      q = self._groups[g.component]
      q.append(g)
      while sum(x.num_pairs for x in q) > self.capacity_pairs and len(q) > 1:
        q.popleft()

  def groups(self, component: str) -> list[PreferenceGroup]:
    return list(self._groups.get(component, ()))

  def sample(self, component: str, max_pairs: int, rng: np.random.Generator) -> list:
    """Random groups of `component` holding at most `max_pairs` pairs in all.

    A group that would overflow the remainder is skipped (a smaller one may
    still fit); `max_pairs <= 0` returns no group.
    """
    pool = self.groups(component)
    out, total = [], 0
    for i in rng.permutation(len(pool)):
      if total + pool[i].num_pairs <= max_pairs:
        out.append(pool[i])
        total += pool[i].num_pairs
    return out

  def state_dict(self) -> dict:
    return {"capacity_pairs": self.capacity_pairs,
            "groups": {c: [g.to_json() for g in q] for c, q in self._groups.items()}}

  @classmethod
  def from_state_dict(cls, state: dict) -> "ReplayBuffer":
    buf = cls(state["capacity_pairs"])
    for c, rows in state["groups"].items():
      buf._groups[c].extend(PreferenceGroup.from_json(r) for r in rows)
    return buf
