"""A trace: what one example went through, step by step."""

from __future__ import annotations

import dataclasses
from typing import Any

from optimas_jax.system.execution import ExampleFailure


@dataclasses.dataclass
class Step:
  """One component's record in a trace."""

  inputs: dict
  outputs: dict
  variable: Any


@dataclasses.dataclass
class Trace:
  """Everything one example went through: inputs, each step, and any failure."""

  index: int
  seed: int
  example: dict
  steps: dict[str, Step]
  failure: ExampleFailure | None = None

  @property
  def failed(self) -> bool:
    return self.failure is not None

  def with_outputs(self, component: str, outputs: dict) -> "Trace":
    """A copy of this trace with `component`'s outputs replaced (a candidate)."""
    steps = dict(self.steps)
    old = steps[component]
    steps[component] = Step(old.inputs, dict(outputs), old.variable)
    return Trace(self.index, self.seed, self.example, steps, self.failure)

  def context(self) -> dict:
    """System inputs plus every produced field."""
    ctx = dict(self.example)
    for step in self.steps.values():
      ctx.update(step.outputs)
    return ctx
