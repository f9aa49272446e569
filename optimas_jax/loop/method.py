"""The one interface every method has: optimize a run of the Harness.

  class Method(Protocol):
    name: str          # the registry name (config.method)
    iterates: bool     # spends a budget (capped in comparisons) or evaluates once
    def optimize(self, harness: Harness) -> Outcome

Optimas and its ablations are loop/optimas.py's variants; the paper's peers
are optimas_jax/peers/{mipro,gepa,textgrad}.py; optimas_jax/methods.py
registers them all.
"""

from __future__ import annotations

from typing import Protocol

from optimas_jax.loop.harness import Harness, Outcome


class Method(Protocol):
  name: str
  iterates: bool

  def optimize(self, harness: Harness) -> Outcome:
    ...
