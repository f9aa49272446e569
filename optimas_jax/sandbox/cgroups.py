"""One control group per sandboxed program: its memory and process count bounded as one.

The host creates the group (root only) with `memory` and `pids` limits before
the launcher starts; the launcher joins it before it forks, so the program and
every descendant are counted together (a fork bomb of 2 GB processes meets one
ceiling, not one per process). Works on cgroup v2 (memory.max, pids.max) and on
v1 hierarchies (memory.limit_in_bytes and memsw, pids.max). Where neither can
be written (not root, or a v2 parent that cannot delegate) `create` returns
None and the sandbox reports `cgroup: False`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

ROOT = pathlib.Path("/sys/fs/cgroup")


def _own_path(controller: str) -> str | None:
  """This process's cgroup path in `controller`'s hierarchy ("" for v2's unified one)."""
  try:
    lines = pathlib.Path("/proc/self/cgroup").read_text().splitlines()
  except OSError:
    return None
  for line in lines:
    _, names, path = line.split(":", 2)
    if controller in names.split(",") or (controller == "" and names == ""):
      return path
  return None


def _write(path: pathlib.Path, value) -> None:
  path.write_text(str(value))


@dataclasses.dataclass
class Group:
  """The folders of one program's group (one per hierarchy: v2 has one, v1 two)."""

  folders: list[pathlib.Path]
  memory_events: pathlib.Path | None      # where OOM kills are counted

  @property
  def procs_files(self) -> list[str]:
    return [str(f / "cgroup.procs") for f in self.folders]

  def oom_kills(self) -> int:
    if self.memory_events is None:
      return 0
    try:
      for line in self.memory_events.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
          return int(value)
    except (OSError, ValueError):
      pass
    return 0

  def remove(self) -> None:
    """Kills what is left in the group and removes its folders."""
    for folder in self.folders:
      for _ in range(50):
        try:
          pids = (folder / "cgroup.procs").read_text().split()
        except OSError:
          break
        for pid in pids:
          try:
            os.kill(int(pid), 9)
          except (ProcessLookupError, PermissionError, ValueError):
            pass
        try:
          folder.rmdir()
          break
        except FileNotFoundError:
          break
        except OSError:                 # busy until the kernel has reaped the processes
          time.sleep(0.02)


def _v2_parent() -> pathlib.Path | None:
  if not (ROOT / "cgroup.controllers").exists():
    return None
  own = _own_path("")
  parent = ROOT / (own or "/").lstrip("/")
  try:
    wanted = {"memory", "pids"}
    if not wanted <= set((parent / "cgroup.controllers").read_text().split()):
      return None
    enabled = set((parent / "cgroup.subtree_control").read_text().split())
    for name in wanted - enabled:
      _write(parent / "cgroup.subtree_control", f"+{name}")
  except OSError:
    return None                         # a parent with processes of its own cannot delegate
  return parent


def create(name: str, memory_bytes: int, processes: int) -> Group | None:
  """A fresh group `name` limited to `memory_bytes` (RAM and swap) and `processes`; None
  where this machine does not let us make one."""
  if os.geteuid() != 0:
    return None
  folders: list[pathlib.Path] = []
  try:
    v2 = _v2_parent()
    if v2 is not None:
      folder = v2 / name
      _fresh(folder)
      folders.append(folder)
      _write(folder / "memory.max", memory_bytes)
      if (folder / "memory.swap.max").exists():
        _write(folder / "memory.swap.max", 0)
      _write(folder / "pids.max", processes)
      return Group(folders, folder / "memory.events")
    memory_own, pids_own = _own_path("memory"), _own_path("pids")
    if memory_own is None or pids_own is None:
      return None
    memory = ROOT / "memory" / memory_own.lstrip("/") / name
    pids = ROOT / "pids" / pids_own.lstrip("/") / name
    for folder in (memory, pids):
      _fresh(folder)
      folders.append(folder)
    _write(memory / "memory.limit_in_bytes", memory_bytes)
    if (memory / "memory.memsw.limit_in_bytes").exists():
      _write(memory / "memory.memsw.limit_in_bytes", memory_bytes)
    _write(pids / "pids.max", processes)
    return Group(folders, memory / "memory.oom_control")
  except OSError:
    Group(folders, None).remove()
    return None


def _fresh(folder: pathlib.Path) -> None:
  if folder.exists():                   # left by a crashed host: empty it first
    Group([folder], None).remove()
  folder.mkdir()
