"""One metrics writer: a JSON line per logged step in `workdir/metrics.jsonl` (process 0)."""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Callable

from optimas_jax.core.mesh import is_writer


class MetricsLog:
  """Appends records (time-stamped) and reads them back; rewrites are atomic."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)

  def write(self, record: dict) -> None:
    if not is_writer():                # one process writes the run's records
      return
    line = json.dumps({"time": time.time(), **record}, default=float)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line + "\n")

  def records(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip()]

  def drop(self, unwanted: Callable[[dict], bool]) -> int:
    """Removes the records `unwanted` selects (e.g. a resumed run's unfinished
    iteration, which it logs again); returns how many."""
    if not is_writer():
      return 0
    records = self.records()
    kept = [r for r in records if not unwanted(r)]
    if len(kept) != len(records):
      tmp = self.path.with_suffix(".jsonl.tmp")
      tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in kept),
                     encoding="utf-8")
      tmp.replace(self.path)
    return len(records) - len(kept)
