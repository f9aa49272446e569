"""What a task hands the Optimas loop."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from optimas_jax.system import System


@dataclasses.dataclass(frozen=True)
class PolicyAdapter:
  """How the parameter optimizer drives a component's Flax policy.

  features(inputs) -> (features (B, K, F), mask (B, K)); apply(params,
  features) -> logits (B, K); render(input, action, logits_row) -> the
  component's output dict when option `action` is taken (so the LRF can
  score it).
  """

  features: Callable[[Sequence[dict]], tuple[np.ndarray, np.ndarray]]
  apply: Callable[[Any, Any], Any]
  render: Callable[[dict, int, np.ndarray], dict]


@dataclasses.dataclass
class Task:
  system: System
  splits: dict[str, list[dict]]                  # train / val / test examples
  hints: dict[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  policies: dict[str, PolicyAdapter] = dataclasses.field(default_factory=dict)
  complete: Callable | None = None               # (prompts, seed) -> texts, for OPRO
  extra_metrics: dict[str, Callable] = dataclasses.field(default_factory=dict)
  llm: Any = None                                # for token counters
  llm_pool: Any = None                           # llm.factory.LLMPool: usage and cost per component
