"""The persistent compilation cache as every entry point enables it (runtime.py)."""

import os

import jax
import numpy as np

from optimas_jax import runtime


def test_an_entry_without_a_stamp_does_not_stop_new_programs_being_kept(tmp_path, monkeypatch):
  # JAX's bounded cache reads every entry's last-use stamp before a write; one entry
  # written without the bound used to fail every later write (each program was
  # compiled again in every process, with a warning).
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "xla"
  folder.mkdir()
  (folder / "jit_old-0123-cache").write_bytes(b"x" * 10)
  os.utime(folder / "jit_old-0123-cache", (1_000, 1_000))
  monkeypatch.setenv("OPTIMAS_JAX_COMPILATION_CACHE", str(folder))
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_compilation_cache_max_size")
  kept = {name: getattr(jax.config, name) for name in names}
  try:
    runtime.enable_compilation_cache()
    compilation_cache.reset_cache()
    def triple_plus_one(x):
      return x * 3.0 + 1.0
    out = jax.jit(triple_plus_one)(np.arange(5.0, dtype=np.float32))
    np.testing.assert_array_equal(out, np.arange(5.0) * 3 + 1)
    new = [n for n in os.listdir(folder) if n.startswith("jit_triple_plus_one-")]
    assert sorted(n.rsplit("-", 1)[1] for n in new) == ["atime", "cache"], os.listdir(folder)
    stamp = (folder / "jit_old-0123-atime").read_bytes()
    assert int.from_bytes(stamp, "little") == 1_000 * 10**9     # its modification time
  finally:
    for name, value in kept.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()
