"""Which component to optimize next: uniform (paper) or gap-softmax (reference).

Gap-softmax samples by a softmax over each component's mean preference gap
on its current data, refreshed every iteration (the reference computes it
once and never updates it). A component whose update was accepted sits out
`cooldown` iterations, unless every component is cooling down.
"""

from __future__ import annotations

import numpy as np


class ComponentSelector:

  def __init__(self, names: list[str], strategy: str = "uniform", cooldown: int = 1,
               temperature: float = 1.0):
    if not names:
      raise ValueError("no optimizable components to select from")
    if strategy not in ("uniform", "gap_softmax", "round_robin"):
      raise ValueError(f"selection strategy {strategy!r}: choose uniform, gap_softmax or round_robin")
    if temperature <= 0:
      raise ValueError(f"selection temperature must be > 0, got {temperature}")
    self.names = list(names)
    self.strategy = strategy
    self.cooldown = cooldown
    self.temperature = temperature
    self.blocked_until: dict[str, int] = {}
    self.turn = 0

  def probabilities(self, iteration: int, gaps: dict[str, float]) -> np.ndarray:
    eligible = np.array([self.blocked_until.get(n, -1) < iteration for n in self.names])
    if not eligible.any():
      eligible[:] = True
    if self.strategy == "gap_softmax":
      g = np.array([gaps.get(n, 0.0) for n in self.names], dtype=np.float64) / self.temperature
      logits = np.where(eligible, g, -np.inf)
      p = np.exp(logits - logits[eligible].max())
    else:
      p = eligible.astype(np.float64)
    return p / p.sum()

  def select(self, iteration: int, gaps: dict[str, float], rng: np.random.Generator) -> str:
    p = self.probabilities(iteration, gaps)
    if self.strategy == "round_robin":
      order = [(self.turn + k) % len(self.names) for k in range(len(self.names))]
      pick = next(i for i in order if p[i] > 0)
      self.turn = pick + 1
      return self.names[pick]
    return self.names[int(rng.choice(len(self.names), p=p))]

  def accepted(self, name: str, iteration: int) -> None:
    self.blocked_until[name] = iteration + self.cooldown

  def state_dict(self) -> dict:
    return {"blocked_until": dict(self.blocked_until), "turn": self.turn}

  def load_state_dict(self, state: dict) -> None:
    self.blocked_until = {k: int(v) for k, v in state["blocked_until"].items()}
    self.turn = int(state["turn"])
