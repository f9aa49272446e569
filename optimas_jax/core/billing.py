"""Which component an LLM call is billed to: a context shared by system and llm.

  with billing.component("answer"):
    llm.generate(requests, params)          # the ledger records it under "answer"

The name lives in a ``ContextVar``, so each thread (and each asyncio task)
has its own; backends read it in the calling thread, before handing requests
to their worker pools.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

DEFAULT_COMPONENT = "default"

_current = contextvars.ContextVar("optimas_llm_component", default=None)


@contextlib.contextmanager
def component(name: str) -> Iterator[str]:
  """Bills LLM calls made inside the block (in this thread) to ``name``."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"component name {name!r}; expected a non-empty string")
  token = _current.set(name)
  try:
    yield name
  finally:
    _current.reset(token)


def current_component(default: str | None = None) -> str:
  """The innermost ``component(...)`` name, else ``default``, else "default"."""
  return _current.get() or default or DEFAULT_COMPONENT
