"""Typed component variables: what Optimas may change about a component.

A variable *spec* lives on the component (its kind, search space and
default); the *value* lives in a `SystemConfig`. Components never store the
value: it is passed to every call, so two configurations can run side by side.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import numpy as np


class VariableError(ValueError):
  """A variable value does not fit its spec."""


# ---------------------------------------------------------------- spaces


@dataclasses.dataclass(frozen=True)
class Choice:
  """A categorical hyperparameter."""

  options: tuple[Any, ...]

  def __post_init__(self):
    if not self.options:
      raise VariableError("Choice(options=...) needs at least one option")
    object.__setattr__(self, "options", tuple(self.options))

  def contains(self, value) -> bool:
    return value in self.options

  def sample(self, rng: np.random.Generator):
    return self.options[int(rng.integers(len(self.options)))]

  def describe(self) -> str:
    return f"one of {list(self.options)}"


@dataclasses.dataclass(frozen=True)
class IntRange:
  """An integer hyperparameter in [low, high] (inclusive)."""

  low: int
  high: int

  def __post_init__(self):
    if self.low > self.high:
      raise VariableError(f"IntRange: low={self.low} > high={self.high}")

  def contains(self, value) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and self.low <= value <= self.high)

  def sample(self, rng: np.random.Generator):
    return int(rng.integers(self.low, self.high + 1))

  def describe(self) -> str:
    return f"an int in [{self.low}, {self.high}]"


@dataclasses.dataclass(frozen=True)
class FloatRange:
  """A float hyperparameter in [low, high], sampled log-uniformly if `log`."""

  low: float
  high: float
  log: bool = False

  def __post_init__(self):
    if self.low > self.high:
      raise VariableError(f"FloatRange: low={self.low} > high={self.high}")
    if self.log and self.low <= 0:
      raise VariableError("FloatRange(log=True) needs low > 0")

  def contains(self, value) -> bool:
    return (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value) and self.low <= value <= self.high)

  def sample(self, rng: np.random.Generator):
    if self.log:
      return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
    return float(rng.uniform(self.low, self.high))

  def describe(self) -> str:
    return f"a float in [{self.low}, {self.high}]" + (" (log scale)" if self.log else "")


Space = Choice | IntRange | FloatRange


# ---------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A prompt or instruction text (discrete, non-differentiable)."""

  default: str
  kind = "prompt"

  def validate(self, value, where: str):
    if not isinstance(value, str) or not value.strip():
      raise VariableError(f"{where}: a prompt variable needs a non-empty string, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
  """Named hyperparameters, each with a declared search space."""

  space: Mapping[str, Space]
  default: Mapping[str, Any]
  kind = "hyperparameters"

  def __post_init__(self):
    self.validate(dict(self.default), "Hyperparameters.default")

  def validate(self, value, where: str):
    if not isinstance(value, Mapping):
      raise VariableError(f"{where}: hyperparameters must be a dict, got {type(value).__name__}")
    missing = set(self.space) - set(value)
    unknown = set(value) - set(self.space)
    if missing or unknown:
      raise VariableError(
          f"{where}: hyperparameter names must be exactly {sorted(self.space)}; "
          f"missing {sorted(missing)}, unknown {sorted(unknown)}")
    for name, space in self.space.items():
      if not space.contains(value[name]):
        raise VariableError(f"{where}.{name}={value[name]!r}: must be {space.describe()}")
    return dict(value)

  def sample(self, rng: np.random.Generator) -> dict:
    return {name: space.sample(rng) for name, space in self.space.items()}

  def grid(self) -> list[dict] | None:
    """Every point of the space when all dimensions are choices, else None."""
    if not all(isinstance(s, Choice) for s in self.space.values()):
      return None
    points = [{}]
    for name, space in self.space.items():
      points = [{**p, name: o} for p in points for o in space.options]
    return points


@dataclasses.dataclass(frozen=True)
class ModelChoice:
  """Which model (or tool, or strategy) serves a component, from a declared set."""

  options: tuple[str, ...]
  default: str
  kind = "model_choice"

  def __post_init__(self):
    object.__setattr__(self, "options", tuple(self.options))
    self.validate(self.default, "ModelChoice.default")

  def validate(self, value, where: str):
    if value not in self.options:
      raise VariableError(f"{where}: model choice {value!r} is not one of {list(self.options)}")
    return value


@dataclasses.dataclass(frozen=True)
class ModelParameters:
  """Weights of a local model: a nested dict of arrays (a Flax params pytree).

  `init(seed) -> pytree` builds the starting parameters, so large weights are
  not held by the spec itself.
  """

  init: Callable[[int], Any]
  seed: int = 0
  kind = "model_parameters"

  @property
  def default(self):
    return self.init(self.seed)

  def validate(self, value, where: str):
    if not isinstance(value, Mapping):
      raise VariableError(
          f"{where}: model parameters must be a nested dict of arrays (a Flax params "
          f"pytree), got {type(value).__name__}")
    return value


VariableSpec = Prompt | Hyperparameters | ModelChoice | ModelParameters
KINDS = ("prompt", "hyperparameters", "model_choice", "model_parameters")


def check_spec(spec, where: str) -> None:
  if spec is not None and not isinstance(spec, (Prompt, Hyperparameters, ModelChoice,
                                                ModelParameters)):
    raise VariableError(
        f"{where}: variable must be Prompt, Hyperparameters, ModelChoice, ModelParameters "
        f"or None, got {type(spec).__name__}")


