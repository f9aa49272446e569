"""Disk cache of LLM responses (sqlite3): the same call is paid for once.

Keyed by a digest of (base URL, model, request, sampling params, seed): two
servers that serve a model under the same name are different models. The
value is the ``Generation``; nothing else is stored (the URL enters the
digest only; no headers, no API key).
Safe across threads (one connection behind a lock) and processes (sqlite
WAL; the first writer wins).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import sqlite3
import threading

from optimas_jax.core.keys import canonical_json
from optimas_jax.llm.base import Generation, Request, SamplingParams

ENV_PATH = "OPTIMAS_LLM_CACHE"


def default_path() -> pathlib.Path:
  """$OPTIMAS_LLM_CACHE, else ~/.cache/optimas_jax/llm_responses.sqlite."""
  env = os.environ.get(ENV_PATH)
  if env:
    return pathlib.Path(env)
  return pathlib.Path.home() / ".cache" / "optimas_jax" / "llm_responses.sqlite"


def cache_key(model: str, request: Request, params: SamplingParams, seed: int | None, *,
              base_url: str, fingerprint: str = "") -> str:
  """A stable digest; greedy calls drop the seed (every sample is the same).

  ``seed`` is the request's own seed (``openai_compat.row_seeds``);
  ``base_url`` is the backend's, e.g. "http://127.0.0.1:8000/v1";
  ``fingerprint`` the weights the server says answer ``model`` ("" where it
  reports none), so an adapter swapped under the same name misses.
  """
  if not isinstance(base_url, str) or not base_url:
    raise ValueError(f"cache_key base_url={base_url!r}; pass the backend's base URL "
                     "(OpenAICompatLLM.base_url)")
  if params.temperature == 0:
    seed = None
  payload = {"base_url": base_url.rstrip("/"), "model": model, "fingerprint": fingerprint,
             "request": request if isinstance(request, str) else list(request),
             "params": dataclasses.asdict(params), "seed": seed}
  return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class ResponseCache:
  """``get``/``put`` of ``Generation``s by key, with hit and miss counters."""

  def __init__(self, path: str | os.PathLike | None = None):
    self.path = pathlib.Path(path) if path is not None else default_path()
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._lock = threading.Lock()
    self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
    with self._lock, self._db:
      self._db.execute("PRAGMA journal_mode=WAL")
      self._db.execute("CREATE TABLE IF NOT EXISTS responses "
                       "(key TEXT PRIMARY KEY, model TEXT, value TEXT)")
    self.hits = self.misses = 0

  def __repr__(self):
    return f"ResponseCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"

  def get(self, key: str) -> Generation | None:
    with self._lock:
      row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
      if row is None:
        self.misses += 1
        return None
      self.hits += 1
    d = json.loads(row[0])
    for field in ("logprobs", "token_ids"):
      if d.get(field) is not None:
        d[field] = tuple(d[field])
    return Generation(**d)

  def put(self, key: str, model: str, generation: Generation) -> None:
    value = json.dumps(dataclasses.asdict(generation), ensure_ascii=False)
    with self._lock, self._db:
      self._db.execute("INSERT OR IGNORE INTO responses VALUES (?, ?, ?)", (key, model, value))

  def __len__(self) -> int:
    with self._lock:
      return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

  def stats(self) -> dict[str, int]:
    with self._lock:
      return {"hits": self.hits, "misses": self.misses}

  def state_dict(self) -> dict[str, int]:
    """The hit and miss counters (the responses themselves live on disk)."""
    return self.stats()

  def load_state_dict(self, state: dict) -> None:
    unknown = sorted(set(state) - {"hits", "misses"})
    if unknown:
      raise ValueError(f"ResponseCache state has unknown fields {unknown}; expected 'hits' "
                       "and 'misses' (a dict from ResponseCache.state_dict())")
    with self._lock:
      self.hits, self.misses = int(state.get("hits", 0)), int(state.get("misses", 0))

  def close(self) -> None:
    with self._lock:
      self._db.close()
