"""The LLM interface components call: ``llm.generate(requests, params, rng)``.

Backends (local JAX decoder now, an OpenAI-compatible HTTP server later)
implement ``LLM``; systems only see this module, so they do not care which
one serves them.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from typing import Any, Literal, Sequence, Union

# A request is a plain prompt (completed as-is) or chat messages
# [{"role": "system"|"user"|"assistant", "content": str}, ...] (rendered with
# the model's chat template, ending with the assistant turn opened).
Request = Union[str, Sequence[dict]]


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to sample. temperature 0 is greedy; ``stop`` strings end the text."""

  temperature: float = 0.0
  top_p: float = 1.0
  max_new_tokens: int = 256
  stop: tuple[str, ...] = ()
  return_logprobs: bool = False

  def __post_init__(self):
    if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
      raise ValueError(f"SamplingParams.stop={self.stop!r}; expected a tuple of non-empty strings")
    object.__setattr__(self, "stop", tuple(self.stop))
    if self.temperature < 0:
      raise ValueError(f"SamplingParams.temperature={self.temperature}; must be >= 0")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"SamplingParams.top_p={self.top_p}; must be in (0, 1]")
    if self.max_new_tokens < 1:
      raise ValueError(f"SamplingParams.max_new_tokens={self.max_new_tokens}; must be >= 1")


@dataclasses.dataclass(frozen=True)
class Generation:
  """One answer. ``num_tokens`` counts completion tokens actually generated."""

  text: str
  num_tokens: int
  prompt_tokens: int
  finish_reason: Literal["stop", "length"]
  logprobs: tuple[float, ...] | None = None    # one per token of ``token_ids``
  token_ids: tuple[int, ...] | None = None
  truncated_prompt_tokens: int = 0             # prompt tokens dropped to fit the context


class Usage:
  """Thread-safe token and request counters of one backend."""

  FIELDS = ("requests", "prompt_tokens", "completion_tokens", "truncated_prompts")

  def __init__(self):
    self._lock = threading.Lock()
    self.requests = self.prompt_tokens = self.completion_tokens = self.truncated_prompts = 0

  def add(self, generations: Sequence[Generation]) -> None:
    with self._lock:
      self.requests += len(generations)
      self.prompt_tokens += sum(g.prompt_tokens for g in generations)
      self.completion_tokens += sum(g.num_tokens for g in generations)
      self.truncated_prompts += sum(g.truncated_prompt_tokens > 0 for g in generations)

  def as_dict(self) -> dict[str, int]:
    with self._lock:
      return {f: getattr(self, f) for f in self.FIELDS}

  def state_dict(self) -> dict[str, int]:
    """The counters as plain ints (JSON), for resuming a run."""
    return self.as_dict()

  def load_state_dict(self, state: dict) -> None:
    """Sets the counters to ``state`` (from ``state_dict``); absent counters read 0."""
    unknown = sorted(set(state) - set(self.FIELDS))
    if unknown:
      raise ValueError(f"Usage state has unknown counters {unknown}; expected a subset of "
                       f"{list(self.FIELDS)} (a dict from Usage.state_dict())")
    with self._lock:
      for f in self.FIELDS:
        setattr(self, f, int(state.get(f, 0)))


class LLM(abc.ABC):
  """A text generator. Implementations must be safe to call from several threads."""

  name: str = "llm"

  def __init__(self):
    self.usage = Usage()

  def state_dict(self) -> dict:
    """Counters to resume from (JSON; never settings or secrets). Backends add theirs."""
    return {"usage": self.usage.state_dict()}

  def load_state_dict(self, state: dict) -> None:
    self.usage.load_state_dict(state.get("usage", {}))

  @abc.abstractmethod
  def generate(self, requests: Sequence[Request], params: SamplingParams = SamplingParams(),
               rng: Any = None) -> list[Generation]:
    """One ``Generation`` per request, in request order.

    ``rng`` is required when ``params.temperature > 0``. Either one key per
    request, stacked on axis 0 (``BatchRng.jax_keys()``; HTTP backends also
    take a list of int seeds), or a single jax key / int seed, from which
    request r (its index in ``requests``) derives its own. A request's
    sample then depends on its own key only, never on the other requests
    of the call: the same key gives the same text, alone or batched.
    """
