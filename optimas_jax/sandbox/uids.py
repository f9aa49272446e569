"""Sandbox uids from a reserved range, each held by one sandbox at a time across processes.

A uid is held by an exclusive `flock` on its own lock file; the lock is released
when the holder closes it or dies, so a crashed host never leaks a uid. Two
sandboxes, in one process or in two, therefore never run programs as the same uid
(and the control group named after a uid is never shared either). The range comes
from `OPTIMAS_SANDBOX_UIDS` ("60000-60999") or the caller; it must hold no real
account's uid.
"""

from __future__ import annotations

import fcntl
import os
import pathlib

DEFAULT_RANGE = (60000, 61000)          # [start, stop)
ENV = "OPTIMAS_SANDBOX_UIDS"
LOCK_DIR = pathlib.Path("/tmp/optimas-sandbox-uids")


def configured_range(value: str | None = None) -> tuple[int, int]:
  """[start, stop) from "START-END" (END inclusive), the environment, or the default."""
  value = value if value is not None else os.environ.get(ENV, "")
  if not value:
    return DEFAULT_RANGE
  try:
    start, end = (int(v) for v in value.split("-"))
  except ValueError:
    raise ValueError(f"{ENV}={value!r}: write the range as START-END, e.g. 60000-60999") \
        from None
  if not 1000 <= start <= end < 2 ** 31:
    raise ValueError(f"{ENV}={value!r}: use unprivileged uids, 1000 <= START <= END")
  return start, end + 1


class UidLease:
  """`count` uids held until `release()` (or the process ends)."""

  def __init__(self, count: int, uid_range: tuple[int, int] | None = None,
               lock_dir: pathlib.Path = LOCK_DIR):
    start, stop = uid_range or configured_range()
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    self.uids: list[int] = []
    self._fds: list[int] = []
    for uid in range(start, stop):
      if len(self.uids) == count:
        break
      fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        continue
      self.uids.append(uid)
      self._fds.append(fd)
    if len(self.uids) < count:
      self.release()
      raise RuntimeError(f"only {len(self.uids)} of {count} sandbox uids are free in "
                         f"[{start}, {stop}); widen {ENV} or close other sandboxes")

  def release(self) -> None:
    for fd in self._fds:
      os.close(fd)
    self._fds = []
