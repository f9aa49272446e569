"""Fixtures shared across the test folders."""

import jax
import pytest

from optimas_jax import host_memory

# Before any test starts JAX's CPU backend, as every entry point does (host_memory.py).
host_memory.reuse_freed_memory()


@pytest.fixture
def fresh_compiles():
  """No persistent compilation cache during the test: every compile is a real one.

  A test that checks what `core/exported.TracedOnce` keeps after a compile needs this:
  an earlier test or run may have left an identical program in the cache (an entry
  point enables it for the whole process), and a cache hit keeps no executable.
  """
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  kept = (jax.config.jax_compilation_cache_dir,
          jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", None)
  compilation_cache.reset_cache()
  yield
  jax.config.update("jax_compilation_cache_dir", kept[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", kept[1])
  compilation_cache.reset_cache()
