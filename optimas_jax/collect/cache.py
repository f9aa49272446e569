"""A SQLite cache of rollout results, so identical rollouts are never paid twice.

Keys are content hashes of (what is re-run, the variables it runs under, the
input it sees, the sample index); values are JSON. Per-example seeds make a
rollout a pure function of its key (system/seeds.py), which is what makes
caching it sound. SQLite gives atomic writes and survives crashes.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import threading
from typing import Any

from optimas_jax.core import keys


def content_hash(*parts: Any) -> str:
  """A stable hash of JSON-able parts (dict keys sorted)."""
  return keys.digest(parts)


class RolloutCache:
  """Key -> JSON value, in one SQLite file (or in memory with path=None)."""

  def __init__(self, path: str | pathlib.Path | None = None):
    target = ":memory:" if path is None else str(path)
    if path is not None:
      pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
    self._db.execute("PRAGMA journal_mode=WAL" if path is not None else "PRAGMA journal_mode=MEMORY")
    self._db.execute("CREATE TABLE IF NOT EXISTS cache (kind TEXT, key TEXT, value TEXT, "
                     "round INTEGER DEFAULT 0, PRIMARY KEY (kind, key))")
    columns = [row[1] for row in self._db.execute("PRAGMA table_info(cache)")]
    if "round" not in columns:   # a cache written before rows carried their round
      self._db.execute("ALTER TABLE cache ADD COLUMN round INTEGER DEFAULT 0")
    self._lock = threading.Lock()
    self.hits = 0
    self.misses = 0

  def get_many(self, kind: str, keys: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with self._lock:
      for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        rows = self._db.execute(
            f"SELECT key, value FROM cache WHERE kind=? AND key IN ({','.join('?' * len(chunk))})",
            [kind, *chunk]).fetchall()
        found.update({k: json.loads(v) for k, v in rows})
      self.hits += len(found)
      self.misses += len(set(keys)) - len(found)
    return found

  def put_many(self, kind: str, items: dict[str, Any], round_index: int = 0) -> None:
    """Stores `items`, tagged with the loop round that computed them."""
    with self._lock:
      self._db.execute("BEGIN")
      self._db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)",
                           [(kind, k, json.dumps(v), round_index) for k, v in items.items()])
      self._db.execute("COMMIT")

  def forget_rounds_from(self, round_index: int) -> int:
    """Deletes rows computed in rounds >= `round_index`; returns how many.

    A run killed mid-iteration has cached part of that iteration's rollouts;
    its resumed run must pay for them again, as the uninterrupted run did, or
    the two would report different budgets.
    """
    with self._lock:
      return self._db.execute("DELETE FROM cache WHERE round >= ?", (round_index,)).rowcount

  def state_dict(self) -> dict:
    return {"hits": self.hits, "misses": self.misses}

  def load_state_dict(self, state: dict) -> None:
    self.hits, self.misses = int(state["hits"]), int(state["misses"])

  def __len__(self) -> int:
    with self._lock:
      return self._db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]

  def close(self) -> None:
    self._db.close()
