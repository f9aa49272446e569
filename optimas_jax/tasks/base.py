"""What a task hands the Optimas loop."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from optimas_jax.system import System


@dataclasses.dataclass(frozen=True)
class PolicyAdapter:
  """How the parameter optimizer drives a component's Flax ranking policy.

  features(inputs) -> (features (B, K, F), mask (B, K)); apply(params,
  features) -> logits (B, K), a stable module-level function (it is a static
  argument of the jitted policy steps); render(input, ordering, features_row)
  -> the component's output dict when it deploys `ordering` (option indices,
  best first). The component's own call must deploy
  render(x, greedy ordering by its logits, features) so that what the
  optimizer rewards is what runs. `picks`: how many options an output takes
  (0: all of them, a full ranking).
  """

  features: Callable[[Sequence[dict]], tuple[np.ndarray, np.ndarray]]
  apply: Callable[[Any, Any], Any]
  render: Callable[[dict, Sequence[int], np.ndarray], dict]
  picks: int = 0

  def num_picks(self, mask: np.ndarray) -> int:
    return int(mask.shape[1]) if self.picks <= 0 else min(self.picks, int(mask.shape[1]))


@dataclasses.dataclass(frozen=True)
class TextPolicy:
  """How the RL optimizer drives an LLM component whose variable is a LoRA adapter.

  requests(inputs) -> the chat requests the component sends for those
  inputs; output(text) -> the component's output dict for one completion.
  The component's own call must use the same two functions (greedy), so the
  text the optimizer rewards is the text the component deploys. `llm` is
  the local backend that samples with an adapter (llm/local.py).
  """

  llm: Any
  requests: Callable[[Sequence[dict]], list]
  output: Callable[[str], dict]
  max_new_tokens: int


@dataclasses.dataclass
class Task:
  system: System
  splits: dict[str, list[dict]]                  # train / val / test examples
  hints: dict[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  policies: dict[str, PolicyAdapter | TextPolicy] = dataclasses.field(default_factory=dict)
  complete: Callable | None = None               # (prompts, seed) -> texts, for OPRO
  extra_metrics: dict[str, Callable] = dataclasses.field(default_factory=dict)
  llm: Any = None                                # for token counters
  llm_pool: Any = None                           # llm.factory.LLMPool: usage and cost per component

  # The LLM counters a run reports and a resumed run restores.

  def usage(self) -> dict | None:
    if self.llm_pool is not None:
      return self.llm_pool.usage()
    return None if self.llm is None else self.llm.usage.as_dict()

  def usage_state(self) -> dict | None:
    if self.llm_pool is not None:
      return {"pool": self.llm_pool.state_dict()}
    return None if self.llm is None else {"llm": self.llm.state_dict()}

  def load_usage_state(self, state: dict) -> None:
    if "pool" in state and self.llm_pool is not None:
      self.llm_pool.load_state_dict(state["pool"])
    elif "llm" in state and self.llm is not None:
      self.llm.load_state_dict(state["llm"])

  def reset_usage(self) -> None:
    """Zero the LLM counters (a new run on an already built task)."""
    if self.llm_pool is not None:
      self.llm_pool.reset_usage()
    elif self.llm is not None:
      self.llm.load_state_dict({})
