"""A component: one step of a compound AI system, called batch-first."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from optimas_jax.core import billing
from optimas_jax.system import variables
from optimas_jax.system.counters import Counters
from optimas_jax.system.execution import ExampleFailure, RetryPolicy, call_with_retries
from optimas_jax.core.seeds import BatchRng

# (inputs, variable value, rng) -> outputs; an output slot may hold an
# Exception to fail that example alone.
BatchCall = Callable[[Sequence[dict], Any, BatchRng], Sequence[Any]]
# (inputs, variable, num, rng) -> for each input, up to `num` alternative
# outputs: how preference collection re-samples a component whose run-time
# call is deterministic (e.g. a policy that takes its argmax at run time).
ProposeCall = Callable[[Sequence[dict], Any, int, BatchRng], Sequence[Sequence[dict]]]


class ComponentContractError(RuntimeError):
  """A component broke the batch contract (wrong number of outputs)."""


@dataclasses.dataclass(frozen=True)
class Component:
  """One step of the system.

  `call(inputs, variable, rng)` maps a list of input dicts (exactly
  `input_fields`) to a list of output dicts (exactly `output_fields`), in
  the same order. The variable value is passed in, never stored.
  """

  name: str
  description: str
  input_fields: tuple[str, ...]
  output_fields: tuple[str, ...]
  call: BatchCall
  variable: variables.VariableSpec | None = None
  retry: RetryPolicy = RetryPolicy()
  propose: ProposeCall | None = None
  # True when the output depends only on the inputs and the variable (no
  # sampling): Monte-Carlo rollouts through such components need one sample.
  deterministic: bool = False

  def __post_init__(self):
    where = f"Component {self.name!r}"
    if not isinstance(self.name, str) or not self.name.isidentifier():
      raise ValueError(f"Component name must be an identifier-like string, got {self.name!r}")
    for attr in ("input_fields", "output_fields"):
      fields = getattr(self, attr)
      if isinstance(fields, str):
        raise ValueError(f"{where}.{attr}: give a list of field names, not the string {fields!r}")
      fields = tuple(fields)
      if len(set(fields)) != len(fields):
        raise ValueError(f"{where}.{attr} has duplicates: {list(fields)}")
      object.__setattr__(self, attr, fields)
    if not self.output_fields:
      raise ValueError(f"{where}.output_fields is empty: a component must produce a field")
    if not callable(self.call):
      raise ValueError(f"{where}.call must be callable (inputs, variable, rng) -> outputs")
    variables.check_spec(self.variable, f"{where}.variable")

  @property
  def optimizable(self) -> bool:
    return self.variable is not None


def execute(component: Component, inputs: Sequence[dict], variable, rng: BatchRng,
            counters: Counters) -> list[dict | ExampleFailure]:
  """Runs `component` on a batch; each slot is its output dict or its failure.

  A batch-level error that is not transient is isolated by re-calling the
  examples one at a time, so one bad example cannot fail its neighbours.
  """
  if not inputs:
    return []
  counters.add(component.name, calls=len(inputs), batches=1)

  def count_retry():
    counters.add(component.name, retries=1)

  def run_batch(batch, batch_rng):
    # LLM backends bill their calls to the component named here (core/billing.py; llm/ledger.py records them).
    with billing.component(component.name):
      return list(call_with_retries(lambda: component.call(batch, variable, batch_rng),
                                    component.retry, count_retry))

  try:
    raw = run_batch(list(inputs), rng)
  except Exception as batch_error:
    if len(inputs) == 1:
      raw = [batch_error]
    else:
      raw = []
      for i, example in enumerate(inputs):
        try:
          raw.extend(run_batch([example], rng.subset([i])))
        except Exception as e:
          raw.append(e)
  if len(raw) != len(inputs):
    raise ComponentContractError(
        f"Component {component.name!r} returned {len(raw)} outputs for {len(inputs)} inputs; "
        "a batch call must return exactly one output (or Exception) per input, in order")

  results = [_check_output(component, out) for out in raw]
  failures = sum(isinstance(r, ExampleFailure) for r in results)
  if failures:
    counters.add(component.name, failures=failures)
  return results


def _check_output(component: Component, out) -> dict | ExampleFailure:
  if isinstance(out, BaseException):
    return ExampleFailure(component.name, f"{type(out).__name__}: {out}")
  if not isinstance(out, dict):
    return ExampleFailure(component.name,
                          f"returned {type(out).__name__}, expected a dict of {component.output_fields}")
  missing = [f for f in component.output_fields if f not in out]
  if missing:
    return ExampleFailure(component.name, f"output is missing fields {missing}")
  return {f: out[f] for f in component.output_fields}
