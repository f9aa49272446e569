"""Process-wide JAX settings shared by the entry points: the compilation cache,
multi-process initialisation, log filters."""

import os

import jax
from absl import flags, logging

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS", ""),
    "host:port of process 0 for a multi-process run (jax.distributed); default "
    "$JAX_COORDINATOR_ADDRESS. Empty with --num_processes=1: one process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", int(os.environ.get("JAX_NUM_PROCESSES", "1")),
    "Processes of a multi-process run (default $JAX_NUM_PROCESSES or 1).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", int(os.environ.get("JAX_PROCESS_ID", "0")),
    "This process's index, 0..num_processes-1 (default $JAX_PROCESS_ID or 0).")


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
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(_COORDINATOR.value, num_processes=n, process_id=_PROCESS_ID.value)
  logging.info("process %d of %d, coordinator %s", jax.process_index(), jax.process_count(),
               _COORDINATOR.value)


def enable_compilation_cache() -> None:
  """Persist compiled programs across processes (decode loops take seconds to compile).

  $OPTIMAS_JAX_COMPILATION_CACHE overrides the folder; set it empty to disable.
  """
  path = os.environ.get("OPTIMAS_JAX_COMPILATION_CACHE",
                        os.path.expanduser("~/.cache/optimas_jax/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


class QuietLibraries:
  """An absl log filter that drops INFO chatter of checkpointing internals."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "/orbax/" not in record.pathname
