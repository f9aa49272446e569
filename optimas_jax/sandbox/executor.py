"""Runs untrusted Python programs with limits; every outcome is a counted result.

  box = Sandbox(Limits(wall_s=5))
  result = box.run({"main.py": "print(1 + 1)"})
  result.status, result.output          # "passed", "2\n"
  box.run_many([...])                   # concurrently (`workers`), results in input order

Each program runs in its own session and process group, in a fresh temporary
folder, with a clean environment (no API keys or other host variables),
CPU, address-space, file-size, open-file and process-count limits, and a
wall-clock limit after which its whole tree is killed. Where the machine
allows it (root, as on the CI and GPU machines) it also gets its own
network namespace (no network at all), PID namespace (killing its PID 1
kills every descendant, daemons included) and mount namespace (everything
read-only except its folder), and runs as an unprivileged uid, one per
worker slot, so RLIMIT_NPROC bounds a fork bomb. Without a network
namespace, sockets are blocked by an audit hook (Python-level only: a
program that starts another binary escapes it); `Sandbox.isolation` says
what this machine gave. See optimas_jax/sandbox/launcher.py for the child side.

Statuses (`STATUSES`): passed (exit 0), failed (non-zero exit, e.g. an
assertion, an exception, MemoryError at the address-space limit),
timeout (wall clock or CPU limit), crashed (killed by a signal, output over
its limit, or the sandbox could not set up). `reason` says which.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

STATUSES = ("passed", "failed", "timeout", "crashed")
LAUNCHER = pathlib.Path(__file__).with_name("launcher.py")
SETUP_FAILED = 125                     # launcher.SETUP_FAILED (the launcher is not importable here)
UID_BASE = 60000                       # sandbox uids: UID_BASE + 16 * (pid % 256) + slot
MAX_WORKERS = 16
_READ_CHUNK = 1 << 16


class SandboxError(RuntimeError):
  """The sandbox itself cannot work on this machine (not a program's failure)."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-program limits. `output_bytes` is what a program may print before it is
  killed; `kept_output_bytes` is what its result keeps (head and tail)."""

  wall_s: float = 10.0
  cpu_s: int = 10
  memory_bytes: int = 2 << 30          # RLIMIT_AS
  file_bytes: int = 16 << 20           # RLIMIT_FSIZE
  open_files: int = 256
  processes: int = 64                  # RLIMIT_NPROC of the sandbox uid (threads count)
  output_bytes: int = 1 << 20
  kept_output_bytes: int = 16 << 10

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if getattr(self, field.name) <= 0:
        raise ValueError(f"Limits.{field.name}={getattr(self, field.name)}; must be > 0")


@dataclasses.dataclass(frozen=True)
class Result:
  status: str                          # one of STATUSES
  reason: str                          # ok | exit | memory | wall_time | cpu_time | signal |
                                       # output_limit | setup
  output: str                          # stdout and stderr, interleaved, cut to the kept size
  output_bytes: int                    # everything the program printed (up to the kill)
  exit_code: int | None = None
  signal: int | None = None
  wall_s: float = 0.0
  cpu_s: float = 0.0

  @property
  def passed(self) -> bool:
    return self.status == "passed"


def _clean_env(workdir: str) -> dict[str, str]:
  return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
          "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
          "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "MPLCONFIGDIR": workdir,
          "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _python_paths() -> list[str]:
  """What the program's interpreter reads: its prefix, executable and import path."""
  paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
           os.path.dirname(os.path.realpath(sys.executable))}
  paths.update(p for p in sys.path if p and os.path.isdir(p))
  return sorted(os.path.realpath(p) for p in paths)


class _Output:
  """Keeps the head and tail of a stream up to `kept` bytes; counts everything."""

  def __init__(self, kept: int):
    self.half = kept // 2
    self.head = bytearray()
    self.tail = bytearray()
    self.total = 0

  def add(self, data: bytes) -> None:
    self.total += len(data)
    room = self.half - len(self.head)
    if room > 0:
      self.head += data[:room]
      data = data[room:]
    if data:
      self.tail += data
      if len(self.tail) > 2 * self.half:
        del self.tail[:len(self.tail) - self.half]

  def text(self) -> str:
    tail = bytes(self.tail[-self.half:]) if self.half else b""
    cut = self.total - len(self.head) - len(tail)
    middle = f"\n... [{cut} bytes cut] ...\n".encode() if cut > 0 else b""
    return (bytes(self.head) + middle + tail).decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _exited(pid: int) -> bool:
  """Whether `pid` has exited, without reaping it (its group id stays ours to kill)."""
  try:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
  except ChildProcessError:
    return True


class Sandbox:
  """Runs programs (a dict of file name -> text) under `limits`, `workers` at a time.

  Args:
    limits: the default limits (a run may pass its own).
    workers: programs run concurrently by `run_many` (and at most this many at once overall).
    network: "auto" (a network namespace where possible, else the socket hook), "hook"
      (the socket hook, no network namespace) or "namespace" (fail if none is possible).
    probe: run a trivial program at construction and raise SandboxError if it cannot pass.
  """

  def __init__(self, limits: Limits = Limits(), workers: int = 2, network: str = "auto",
               probe: bool = True):
    if network not in ("auto", "hook", "namespace"):
      raise ValueError(f"network={network!r}: choose 'auto', 'hook' or 'namespace'")
    if not 1 <= workers <= MAX_WORKERS:
      raise ValueError(f"workers={workers}; use 1..{MAX_WORKERS}")
    self.limits = limits
    self.workers = workers
    self.network = network
    self.root = os.geteuid() == 0
    uid_base = UID_BASE + 16 * (os.getpid() % 256)
    # One unprivileged uid per worker slot (None: not root, no uid drop).
    self.uids = tuple(uid_base + slot if self.root else None for slot in range(workers))
    self._slots: queue.Queue = queue.Queue()
    for uid in self.uids:
      self._slots.put(uid)
    self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sandbox")
    self._base = tempfile.mkdtemp(prefix="optimas-sandbox-")
    os.chmod(self._base, 0o711)         # the sandbox uid may enter its own folder, not list
    self._cleanup = weakref.finalize(self, shutil.rmtree, self._base, True)
    self._paths = _python_paths()
    self._lock = threading.Lock()
    self.counts: collections.Counter = collections.Counter()
    self.isolation: dict = {}
    if probe:
      self._probe()

  # ------------------------------------------------------------ public

  def run(self, files: Mapping[str, str], main: str = "main.py",
          limits: Limits | None = None) -> Result:
    """Runs `files[main]` with the other files beside it; never raises for the program."""
    if main not in files:
      raise ValueError(f"files has no {main!r}; got {sorted(files)}")
    uid = self._slots.get()
    try:
      result = self._run(files, main, limits or self.limits, uid)
    finally:
      self._slots.put(uid)
    with self._lock:
      self.counts[result.status] += 1
      self.counts[f"reason/{result.reason}"] += 1
    return result

  def run_many(self, programs: Sequence[Mapping[str, str]], main: str = "main.py",
               limits: Limits | None = None) -> list[Result]:
    """Runs every program, `workers` at a time; results in input order."""
    return list(self._pool.map(lambda files: self.run(files, main, limits), programs))

  def stats(self) -> dict[str, int]:
    with self._lock:
      return dict(self.counts)

  def close(self) -> None:
    self._pool.shutdown(wait=True)
    self._cleanup()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # ------------------------------------------------------------ internals

  def _probe(self) -> None:
    program = ("import json, os, unittest\n"
               "print(json.dumps({'uid': os.getuid()}))\n")
    result = self._run({"main.py": program}, "main.py",
                       dataclasses.replace(self.limits, wall_s=max(self.limits.wall_s, 30.0)),
                       self.uids[0])
    if not result.passed:
      raise SandboxError(f"the sandbox cannot run a trivial program on this machine "
                         f"({result.status}, {result.reason}): {result.output[-2000:]}")
    if self.network == "namespace" and not self.isolation.get("net"):
      raise SandboxError("network='namespace' but this machine allows no network namespace "
                         "(not root, or unshare(CLONE_NEWNET) is refused)")

  def _spec(self, workdir: str, main: str, limits: Limits, uid, status_fd: int) -> dict:
    return {
        "workdir": workdir, "main": main, "uid": uid, "gid": uid, "status_fd": status_fd,
        "limits": {"cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes,
                   "file_bytes": limits.file_bytes, "open_files": limits.open_files,
                   "processes": limits.processes},
        "isolate": {"net": self.root and self.network != "hook", "mount": self.root,
                    "pid": self.root},
        "socket_hook": "on" if self.network == "hook" else "auto",
        "expose": self._paths,
    }

  def _run(self, files: Mapping[str, str], main: str, limits: Limits, uid) -> Result:
    if not os.path.isdir(self._base):  # a tmp cleaner took it between runs
      os.makedirs(self._base, exist_ok=True)
      os.chmod(self._base, 0o711)
    workdir = tempfile.mkdtemp(prefix="run-", dir=self._base)
    try:
      for name, text in files.items():
        path = pathlib.Path(workdir, name)
        if path.parent != pathlib.Path(workdir):
          raise ValueError(f"file name {name!r}: plain names only, no folders")
        path.write_text(text)
        path.chmod(0o644)
      if uid is not None:
        os.chown(workdir, uid, uid)
      os.chmod(workdir, 0o700)
      return self._launch(workdir, main, limits, uid)
    finally:
      shutil.rmtree(workdir, ignore_errors=True)

  def _launch(self, workdir: str, main: str, limits: Limits, uid) -> Result:
    status_r, status_w = os.pipe()
    spec = self._spec(workdir, main, limits, uid, status_w)
    start = time.monotonic()
    try:
      proc = subprocess.Popen(
          [sys.executable, "-s", "-P", "-B", str(LAUNCHER), json.dumps(spec)],
          cwd=workdir, env=_clean_env(workdir), stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
          pass_fds=(status_w,))
    finally:
      os.close(status_w)
    output = _Output(limits.kept_output_bytes)
    killed = None
    try:
      killed = self._pump(proc, output, start + limits.wall_s, limits.output_bytes)
    finally:
      _kill_group(proc.pid)              # stragglers of the group, whatever happened
      proc.wait()
      proc.stdout.close()
      with os.fdopen(status_r, "rb") as f:
        raw = f.read()
    wall = time.monotonic() - start
    report = json.loads(raw) if raw else None
    if report is not None and report.get("isolation"):
      self.isolation = report["isolation"]
    return _classify(killed, report, output, wall, limits)

  @staticmethod
  def _pump(proc, output: _Output, deadline: float, cap: int) -> str | None:
    """Reads the output until the launcher exits; returns why it was killed, if it was."""
    sel = selectors.DefaultSelector()
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    sel.register(fd, selectors.EVENT_READ)
    try:
      open_ = True
      while True:
        now = time.monotonic()
        if now >= deadline:
          _kill_group(proc.pid)
          return "wall_time"
        if open_:
          for _ in sel.select(timeout=min(0.05, deadline - now)):
            try:
              data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
              continue
            if not data:
              open_ = False
              sel.unregister(fd)
              break
            output.add(data)
            if output.total > cap:
              _kill_group(proc.pid)
              return "output_limit"
        else:
          time.sleep(0.005)
        if _exited(proc.pid):
          if open_:                          # what is still in the pipe
            while True:
              try:
                data = os.read(fd, _READ_CHUNK)
              except BlockingIOError:
                break
              if not data:
                break
              output.add(data)
              if output.total > cap:
                return "output_limit"
          return None
    finally:
      sel.close()


def _classify(killed: str | None, report: dict | None, output: _Output, wall: float,
              limits: Limits) -> Result:
  text = output.text()
  base = dict(output=text, output_bytes=output.total, wall_s=wall)
  if killed == "wall_time":
    return Result("timeout", "wall_time", **base)
  if killed == "output_limit":
    return Result("crashed", "output_limit", **base)
  if report is None or not report.get("setup_ok"):
    return Result("crashed", "setup", **base)
  cpu = float(report.get("cpu_s", 0.0))
  base["cpu_s"] = cpu
  sig, code = report.get("signal"), report.get("exit")
  if sig is not None:
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_s):
      return Result("timeout", "cpu_time", signal=sig, **base)
    return Result("crashed", "signal", signal=sig, **base)
  if code == 0:
    return Result("passed", "ok", exit_code=0, **base)
  reason = "memory" if "MemoryError" in text[-4000:] else "exit"
  return Result("failed", reason, exit_code=code, **base)
