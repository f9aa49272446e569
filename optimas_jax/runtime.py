"""Process-wide JAX settings shared by the entry points."""

import os

import jax


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
