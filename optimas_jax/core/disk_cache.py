"""Bounds for what this package keeps on disk between processes.

Kept programs (`core/exported.py`) and converted models (`models/converted.py`) are
keyed by the source that made them, so every code change, clone or virtual
environment adds entries (a SmolLM2 conversion is 540 MB; a MiniLM step program
4.4 MB) and nothing ever reads the old ones again. Each entry's modification time
marks its last use (`touch` on every read); `evict` removes the least recently used
ones beyond a bound. A process that loses a file to another's eviction reads nothing
and makes the entry again, as for a damaged one.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import Iterable

from absl import logging


def touch(path: pathlib.Path) -> None:
  """Marks `path` (file or folder) as used now."""
  try:
    os.utime(path)
  except OSError:
    pass


def size_of(path: pathlib.Path) -> int:
  """Bytes of a file, or of every file under a folder."""
  try:
    if path.is_dir():
      return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
  except OSError:           # removed meanwhile by another process
    return 0


def evict(entries: Iterable[pathlib.Path], *, max_bytes: int | None = None,
          max_entries: int | None = None, keep: pathlib.Path | None = None) -> list[pathlib.Path]:
  """Removes the least recently used of `entries` until they fit both bounds.

  `keep` (the entry just written or read) is never removed. Returns what was removed.
  """
  def last_use(path):
    try:
      return path.stat().st_mtime
    except OSError:
      return float("-inf")

  # `keep` claims its room first, then the others from the most recently used (ties in
  # a fixed order, not the folder listing's).
  ranked = sorted((p for p in entries if p.exists()),
                  key=lambda p: (p == keep, last_use(p), str(p)), reverse=True)
  sizes = {p: size_of(p) for p in ranked} if max_bytes is not None else {}
  total, count, removed, over = 0, 0, [], False
  for path in ranked:
    total += sizes.get(path, 0)
    count += 1
    # Strictly by last use: past the bound, every older entry goes too.
    over = over or ((max_bytes is not None and total > max_bytes)
                    or (max_entries is not None and count > max_entries))
    if over and path != keep:
      try:
        if path.is_dir():
          shutil.rmtree(path)
        else:
          path.unlink()
        removed.append(path)
      except OSError as e:                # another process's eviction got there first
        logging.info("not evicted: %s (%s)", path, e)
  if removed:
    logging.info("evicted %d least recently used entries from %s", len(removed),
                 removed[0].parent)
  return removed
