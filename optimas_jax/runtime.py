"""Process-wide JAX settings shared by the entry points: host memory reuse, the
compilation cache, multi-process initialisation, log filters."""

import importlib.util
import os
import socket
import time

import jax
from absl import flags, logging

from optimas_jax import host_memory

# The persistent compilation cache's bound (least recently used programs go first).
COMPILATION_CACHE_MAX_BYTES = 4 << 30

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS", ""),
    "host:port of process 0 for a multi-process run (jax.distributed); default "
    "$JAX_COORDINATOR_ADDRESS. Empty with --num_processes=1: one process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", int(os.environ.get("JAX_NUM_PROCESSES", "1")),
    "Processes of a multi-process run (default $JAX_NUM_PROCESSES or 1).")
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout_s", 120,
    "Seconds a multi-process run waits for the coordinator and for every process to join "
    "before it stops with an error (JAX aborts the process at this deadline).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", int(os.environ.get("JAX_PROCESS_ID", "0")),
    "This process's index, 0..num_processes-1 (default $JAX_PROCESS_ID or 0).")


def _host_port(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"--coordinator_address={address!r}: give host:port, e.g. "
                     "10.0.0.1:1234 (process 0's address, the same for every process)")
  return host, int(port)


def _check_coordinator(host: str, port: int, process_id: int, timeout_s: float) -> None:
  """Fails in seconds, naming the flag, where JAX would wait and then abort: process 0
  cannot listen on the port, or another process cannot reach process 0."""
  if process_id == 0:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        s.bind(("", port))
      except OSError as e:
        raise ValueError(f"--coordinator_address={host}:{port}: process 0 cannot listen on "
                         f"port {port} ({e}); choose a free port") from None
    return
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host, port), timeout=2).close()
      return
    except OSError as e:
      if time.monotonic() > deadline:
        raise ValueError(
            f"--coordinator_address={host}:{port}: process 0's coordinator did not answer "
            f"within {timeout_s:g} s (--distributed_timeout_s) ({e}); start process 0 with "
            "the same --coordinator_address, or fix the address") from None
      time.sleep(0.5)


def init_distributed() -> None:
  """jax.distributed from the flags (or the JAX_* environment); a no-op for one process.

  On CPU the processes talk through gloo collectives (tests and laptops: several
  processes on loopback); on GPU and TPU through the platform's own.
  """
  n = _NUM_PROCESSES.value
  if n == 1 and not _COORDINATOR.value:
    return
  if n < 1 or not 0 <= _PROCESS_ID.value < n:
    raise ValueError(f"--process_id={_PROCESS_ID.value} --num_processes={n}: use "
                     "0 <= process_id < num_processes")
  if not _COORDINATOR.value:
    raise ValueError(f"--num_processes={n} needs --coordinator_address=host:port "
                     "(process 0's address, the same for every process)")
  if _TIMEOUT.value < 1:
    raise ValueError(f"--distributed_timeout_s={_TIMEOUT.value}: use >= 1")
  host, port = _host_port(_COORDINATOR.value)
  _check_coordinator(host, port, _PROCESS_ID.value, _TIMEOUT.value)
  # JAX aborts (SIGABRT, DEADLINE_EXCEEDED) when not every process joins in time; say
  # beforehand what that will mean.
  logging.warning(
      "process %d of %d (--num_processes) joining %s (--coordinator_address); within %d s "
      "(--distributed_timeout_s) all %d processes must join with the same "
      "--num_processes and --coordinator_address, else JAX aborts with DEADLINE_EXCEEDED",
      _PROCESS_ID.value, n, _COORDINATOR.value, _TIMEOUT.value, n)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(_COORDINATOR.value, num_processes=n, process_id=_PROCESS_ID.value,
                             initialization_timeout=_TIMEOUT.value)
  logging.info("process %d of %d, coordinator %s", jax.process_index(), jax.process_count(),
               _COORDINATOR.value)


def configure_process() -> str:
  """What every entry point sets before its first JAX computation: freed host memory
  kept for reuse (host_memory.py) and the compilation cache. Returns the host memory
  setting, for the logs and the benchmarks' records."""
  how = host_memory.reuse_freed_memory()
  enable_compilation_cache()
  return how


def enable_compilation_cache() -> None:
  """Persist compiled programs across processes (decode loops take seconds to compile).

  $OPTIMAS_JAX_COMPILATION_CACHE overrides the folder; set it empty to disable.
  """
  path = os.environ.get("OPTIMAS_JAX_COMPILATION_CACHE",
                        os.path.expanduser("~/.cache/optimas_jax/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    # Every program, however small: loading one beats compiling it (~16 ms each for the
    # LRF init's dozen small programs; warm set-up is their sum).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # Bounded: every source change compiles new programs and nothing reads the old
    # ones again. JAX evicts the least recently used; it needs filelock to do so.
    if importlib.util.find_spec("filelock") is not None:
      stamp_unstamped_entries(path)
      jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_MAX_BYTES)


# JAX's bounded cache (jax/_src/lru_cache.py): entry `<key>-cache`, its last use in
# `<key>-atime` (8 bytes, little-endian nanoseconds).
_ENTRY, _STAMP = "-cache", "-atime"


def stamp_unstamped_entries(path: str) -> None:
  """Gives every entry of the compilation cache at `path` a last-use stamp.

  JAX's bounded cache reads every entry's stamp before it writes a new one, and
  one missing stamp (an entry written without the bound: an older version of this
  package, another program on the same folder) fails every write after it: each
  new program is compiled again in every process. A missing stamp becomes the
  entry's modification time.
  """
  try:
    names = set(os.listdir(path))
  except OSError:
    return
  for name in names:
    if name.endswith(_ENTRY) and name[:-len(_ENTRY)] + _STAMP not in names:
      entry = os.path.join(path, name)
      try:
        stamp = os.stat(entry).st_mtime_ns.to_bytes(8, "little")
        with open(entry[:-len(_ENTRY)] + _STAMP, "xb") as f:
          f.write(stamp)
      except OSError:          # removed, or stamped, by another process meanwhile
        pass


class QuietLibraries:
  """An absl log filter that drops INFO chatter of checkpointing internals."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "/orbax/" not in record.pathname
