"""Runs untrusted Python programs with limits; every outcome is a counted result.

  box = Sandbox(Limits(wall_s=5))
  result = box.run({"main.py": "print(1 + 1)"})
  result.status, result.output          # "passed", "2\n"
  box.run_many([...])                   # concurrently (`workers`), results in input order

Each program runs in its own session and process group, in a fresh temporary
folder, with a clean environment (no API keys or other host variables),
CPU, address-space, file-size, open-file and process-count limits, and a
wall-clock limit after which its whole tree is killed. Where the machine
allows it, it also gets its own network namespace (no network at all), PID
namespace (killing its PID 1 kills every descendant, daemons included) and
mount namespace: the hidden paths (temporary and home folders, plus what the
caller names: benchmark data, the project) are covered by empty file
systems, its work folder is a private tmpfs capped at `disk_bytes` and
`disk_files`, and everything else is read-only. As root (the CI and GPU
machines) it runs as an unprivileged uid leased from a reserved range
(sandbox/uids.py) in a control group that bounds its memory and process count
as one (sandbox/cgroups.py); not root, it runs in an unprivileged user
namespace with every capability dropped. Without a network namespace,
sockets are blocked by an audit hook (Python-level only); `Sandbox.isolation`
says what this machine gave and `require` makes a missing layer an error at
start-up. `run_pair` runs two programs joined by a pair of pipes (the code
grader's judge and the code under test). See launcher.py for the child side.

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

from optimas_jax.sandbox import cgroups, uids as uids_lib

STATUSES = ("passed", "failed", "timeout", "crashed")
LAUNCHER = pathlib.Path(__file__).with_name("launcher.py")
SETUP_FAILED = 125                     # launcher.SETUP_FAILED (the launcher is not importable here)
MAX_WORKERS = 16
# Covered in every program's view (the caller adds its own: benchmark data, the project).
DEFAULT_HIDDEN = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/root", "/home", "/mnt", "/media",
                  "/srv")
LAYERS = ("net", "mount", "pid", "hidden", "disk", "read_only", "cgroup", "uid_drop", "user")
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
  processes: int = 16                  # the whole program's processes and threads
  disk_bytes: int = 64 << 20           # its work folder (a private tmpfs), all files together
  disk_files: int = 4096               # ... and its number of files and folders
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
                                       # output_limit | setup | stopped (run_pair's second)
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
  """What the program's interpreter reads: its prefixes, executable, and the import path
  entries inside them (the standard library, site-packages); not the caller's own folders."""
  prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                            sys.base_exec_prefix)}
  paths = set(prefixes) | {os.path.dirname(os.path.realpath(sys.executable))}
  for entry in sys.path:
    real = os.path.realpath(entry) if entry else ""
    if real and os.path.isdir(real) and any(real == p or real.startswith(p + "/")
                                            for p in prefixes):
      paths.add(real)
  return sorted(paths)


def _count_processes(uid: int) -> int:
  """Processes of `uid` now (not root: RLIMIT_NPROC counts them with the program's)."""
  count = 0
  for entry in os.listdir("/proc"):
    try:
      if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
        count += 1
    except OSError:
      pass
  return count


def _clean_up(base: str, lease) -> None:
  shutil.rmtree(base, ignore_errors=True)
  if lease is not None:
    lease.release()


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
    hide: more paths no program may read (added to DEFAULT_HIDDEN).
    require: isolation layers (LAYERS) whose absence is a SandboxError at construction.
    uid_range: [start, stop) of the uids to lease (root only); default OPTIMAS_SANDBOX_UIDS.
  """

  def __init__(self, limits: Limits = Limits(), workers: int = 2, network: str = "auto",
               probe: bool = True, hide: Sequence[str] = (), require: Sequence[str] = (),
               uid_range: tuple[int, int] | None = None):
    if network not in ("auto", "hook", "namespace"):
      raise ValueError(f"network={network!r}: choose 'auto', 'hook' or 'namespace'")
    if not 1 <= workers <= MAX_WORKERS:
      raise ValueError(f"workers={workers}; use 1..{MAX_WORKERS}")
    unknown = sorted(set(require) - set(LAYERS))
    if unknown:
      raise ValueError(f"require={unknown}: choose from {LAYERS}")
    self.limits = limits
    self.workers = workers
    self.network = network
    self.require = tuple(require)
    self.hide = tuple(DEFAULT_HIDDEN) + tuple(os.path.realpath(h) for h in hide)
    self.root = os.geteuid() == 0
    # Two unprivileged uids per worker slot (a pair's two programs), leased under a
    # cross-process lock (None: not root, no uid drop).
    self._lease = uids_lib.UidLease(2 * workers, uid_range) if self.root else None
    leased = self._lease.uids if self._lease else [None] * (2 * workers)
    self.uids = tuple(leased)
    self._slots: queue.Queue = queue.Queue()
    for slot in range(workers):
      self._slots.put((leased[2 * slot], leased[2 * slot + 1]))
    self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sandbox")
    self._base = tempfile.mkdtemp(prefix="optimas-sandbox-")
    os.chmod(self._base, 0o711)         # the sandbox uid may enter its own folder, not list
    self._cleanup = weakref.finalize(self, _clean_up, self._base, self._lease)
    self._paths = _python_paths()
    self._lock = threading.Lock()
    self.counts: collections.Counter = collections.Counter()
    self.isolation: dict = {}
    self._namespaces = True              # False after a failed namespace setup (not root)
    if probe:
      self._probe()

  # ------------------------------------------------------------ public

  def missing(self, layers: Sequence[str]) -> list[str]:
    """The layers of `layers` this machine did not give (after the probe)."""
    return [layer for layer in layers if not self.isolation.get(layer)]

  def run(self, files: Mapping[str, str], main: str = "main.py",
          limits: Limits | None = None) -> Result:
    """Runs `files[main]` with the other files beside it; never raises for the program."""
    if main not in files:
      raise ValueError(f"files has no {main!r}; got {sorted(files)}")
    slot = self._slots.get()
    try:
      result = self._run(files, main, limits or self.limits, slot[0])
    finally:
      self._slots.put(slot)
    self._count(result)
    return result

  def run_pair(self, first: Mapping[str, str], second: Mapping[str, str],
               main: str = "main.py", limits: Limits | None = None) -> tuple[Result, Result]:
    """Runs two programs at once, each in its own sandbox (own uid, namespaces, group),
    joined only by two pipes: `channel.json` in each folder names its ends ({"send": fd,
    "recv": fd}). When the first ends, the second is stopped; only the first is counted."""
    limits = limits or self.limits
    slot = self._slots.get()
    a_recv, b_send = os.pipe()
    b_recv, a_send = os.pipe()
    # Each launch closes its ends once its child holds them and empties the list; what is
    # left (a launch that never started) is closed here. Never twice: numbers are reused.
    ends = {"first": [a_send, a_recv], "second": [b_send, b_recv]}
    stop = threading.Event()
    second_result: list[Result] = []

    def run_second():
      second_result.append(self._run(
          {**second, "channel.json": json.dumps({"send": b_send, "recv": b_recv})}, main,
          limits, slot[1], ends["second"], stop))

    try:
      thread = threading.Thread(target=run_second, name="sandbox-pair", daemon=True)
      thread.start()
      try:
        result = self._run({**first, "channel.json": json.dumps({"send": a_send,
                                                                 "recv": a_recv})},
                           main, limits, slot[0], ends["first"])
      finally:
        stop.set()
        thread.join()
    finally:
      self._slots.put(slot)
      for fds in ends.values():
        for fd in fds:
          os.close(fd)
    self._count(result)
    return result, second_result[0]

  def run_many(self, programs: Sequence[Mapping[str, str]], main: str = "main.py",
               limits: Limits | None = None) -> list[Result]:
    """Runs every program, `workers` at a time; results in input order."""
    return list(self._pool.map(lambda files: self.run(files, main, limits), programs))

  def run_pairs(self, pairs: Sequence[tuple[Mapping[str, str], Mapping[str, str]]],
                main: str = "main.py", limits: Limits | None = None
                ) -> list[tuple[Result, Result]]:
    """`run_pair` for every pair, `workers` at a time; results in input order."""
    return list(self._pool.map(lambda pair: self.run_pair(*pair, main, limits), pairs))

  def _count(self, result: Result) -> None:
    with self._lock:
      self.counts[result.status] += 1
      self.counts[f"reason/{result.reason}"] += 1

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
    limits = dataclasses.replace(self.limits, wall_s=max(self.limits.wall_s, 30.0))
    result = self._run({"main.py": program}, "main.py", limits, self.uids[0])
    if result.reason == "setup" and not self.root:
      # The kernel let us make a namespace but not use it (e.g. mounts refused inside a
      # container): run without namespaces, and say so through `isolation` and `require`.
      self._namespaces = False
      setup_error = result.output[-500:]
      result = self._run({"main.py": program}, "main.py", limits, self.uids[0])
      self.isolation["namespace_setup_error"] = setup_error
    self.isolation["cgroup"] = self.isolation.get("cgroup", False)
    if not result.passed:
      raise SandboxError(f"the sandbox cannot run a trivial program on this machine "
                         f"({result.status}, {result.reason}): {result.output[-2000:]}")
    if self.network == "namespace" and not self.isolation.get("net"):
      raise SandboxError("network='namespace' but this machine allows no network namespace "
                         "(not root, or unshare(CLONE_NEWNET) is refused)")
    missing = self.missing(self.require)
    if missing:
      raise SandboxError(
          f"this machine cannot give the sandbox {missing} (got {self.isolation}): run as "
          "root, or enable unprivileged user namespaces (sysctl "
          "kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0), or accept "
          "the weaker isolation explicitly (config.sandbox.allow_weak_isolation=True)")

  def _spec(self, workdir: str, main: str, limits: Limits, uid, status_fd: int,
            channel_fds=(), cgroup_procs=()) -> dict:
    return {
        "workdir": workdir, "main": main, "uid": uid, "gid": uid, "status_fd": status_fd,
        "limits": {"cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes,
                   "file_bytes": limits.file_bytes, "open_files": limits.open_files,
                   "processes": limits.processes, "disk_bytes": limits.disk_bytes,
                   "disk_files": limits.disk_files},
        "isolate": {"user": self._namespaces and not self.root,
                    "net": self._namespaces and self.network != "hook",
                    "mount": self._namespaces, "pid": self._namespaces},
        "socket_hook": "on" if self.network == "hook" else "auto",
        "expose": self._paths, "hide": list(self.hide), "channel_fds": list(channel_fds),
        "cgroup_procs": list(cgroup_procs),
        "nproc_base": 0 if self.root else _count_processes(os.getuid()),
    }

  def _run(self, files: Mapping[str, str], main: str, limits: Limits, uid,
           channel_fds=(), stop: threading.Event | None = None) -> Result:
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
      return self._launch(workdir, main, limits, uid, channel_fds, stop)
    finally:
      shutil.rmtree(workdir, ignore_errors=True)

  def _launch(self, workdir: str, main: str, limits: Limits, uid, channel_fds=(),
              stop: threading.Event | None = None) -> Result:
    # The launcher and supervisor are in the group too: two more processes.
    group = cgroups.create(f"optimas-sandbox-{uid}", limits.memory_bytes,
                           limits.processes + 2) if uid is not None else None
    status_r, status_w = os.pipe()
    spec = self._spec(workdir, main, limits, uid, status_w, channel_fds,
                      group.procs_files if group else ())
    start = time.monotonic()
    try:
      proc = subprocess.Popen(
          [sys.executable, "-s", "-P", "-B", str(LAUNCHER), json.dumps(spec)],
          cwd=workdir, env=_clean_env(workdir), stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
          pass_fds=(status_w, *channel_fds))
    except BaseException:
      if group:
        group.remove()
      raise
    finally:
      os.close(status_w)
      for fd in channel_fds:             # the child holds them now; ours would hide its EOF
        os.close(fd)
      if channel_fds:
        del channel_fds[:]
    output = _Output(limits.kept_output_bytes)
    killed = None
    oom_kills = 0
    try:
      killed = self._pump(proc, output, start + limits.wall_s, limits.output_bytes, stop)
    finally:
      _kill_group(proc.pid)              # stragglers of the group, whatever happened
      proc.wait()
      proc.stdout.close()
      with os.fdopen(status_r, "rb") as f:
        raw = f.read()
      if group:
        oom_kills = group.oom_kills()
        group.remove()
    wall = time.monotonic() - start
    report = json.loads(raw) if raw else None
    if report is not None and report.get("isolation"):
      self.isolation = {**report["isolation"], "cgroup": group is not None,
                        "uid_drop": uid is not None}
    return _classify(killed, report, output, wall, limits, oom_kills)

  @staticmethod
  def _pump(proc, output: _Output, deadline: float, cap: int,
            stop: threading.Event | None = None) -> str | None:
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
        if stop is not None and stop.is_set():
          _kill_group(proc.pid)
          return "stopped"
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
              limits: Limits, oom_kills: int = 0) -> Result:
  text = output.text()
  base = dict(output=text, output_bytes=output.total, wall_s=wall)
  if killed == "stopped":
    return Result("failed", "stopped", **base)
  if oom_kills:                          # the group's memory ceiling killed a process
    return Result("crashed", "memory", **base)
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
