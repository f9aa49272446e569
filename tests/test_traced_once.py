"""Programs traced once per machine (core/exported.py) and the LRF step that uses them."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.core import exported
from optimas_jax.core.exported import TracedOnce

pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")
pytestmark = pytest.mark.usefixtures("fresh_compiles")   # what is kept follows real compiles


def _counted(traces):
  def step(state, x, scale):
    traces.append(1)
    new = jax.tree.map(lambda s: s * scale + jnp.sum(x), state)
    return new, {"total": sum(jnp.sum(v) for v in jax.tree.leaves(new))}
  return step


def test_a_second_process_loads_the_program_without_tracing(tmp_path):
  traces = []
  state = {"a": jnp.arange(4.0), "b": (jnp.ones((2, 3)),)}
  x, scale = jnp.full((5,), 0.5), jnp.float32(2.0)
  want = jax.jit(_counted([]))(state, x, scale)
  first = TracedOnce(_counted(traces), "toy", "v1", donate_argnums=(0,), folder=tmp_path)
  got = first(jax.tree.map(jnp.copy, state), x, scale)
  assert len(traces) == 1 and len(list(tmp_path.glob("toy-*.bin"))) == 1
  # A new instance (as a new process would build): no trace, the same values.
  again = TracedOnce(_counted(traces), "toy", "v1", donate_argnums=(0,), folder=tmp_path)
  donated = jax.tree.map(jnp.copy, state)
  out = again(donated, x, scale)
  assert len(traces) == 1
  jax.tree.map(np.testing.assert_array_equal, out, want)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(donated))   # donation kept
  # Calls with the same signature reuse the program; a new shape is a new one.
  again(jax.tree.map(jnp.copy, state), x, scale)
  again(jax.tree.map(jnp.copy, state), jnp.ones((7,)), scale)
  assert again.programs() == 2 and len(traces) == 2


def test_what_the_trace_reads_is_in_the_key(tmp_path, monkeypatch):
  traces = []
  state, x, s = {"a": jnp.ones(3)}, jnp.ones(2), jnp.float32(1.0)
  TracedOnce(_counted(traces), "toy", "lr=0.1", folder=tmp_path)(state, x, s)
  TracedOnce(_counted(traces), "toy", "lr=0.2", folder=tmp_path)(state, x, s)
  assert len(traces) == 2                          # another static key: traced afresh
  monkeypatch.setattr(exported, "source_digest", lambda: "edited source")
  TracedOnce(_counted(traces), "toy", "lr=0.1", folder=tmp_path)(state, x, s)
  assert len(traces) == 3                          # the package's code changed
  assert len(list(tmp_path.glob("toy-*.bin"))) == 3


def test_an_unreadable_file_is_traced_again_and_replaced(tmp_path):
  traces = []
  args = ({"a": jnp.ones(3)}, jnp.ones(2), jnp.float32(1.0))
  TracedOnce(_counted(traces), "toy", "k", folder=tmp_path)(*args)
  (path,) = tmp_path.glob("toy-*.bin")
  path.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00junk")
  (executable,) = tmp_path.glob("toy-*.xla")
  executable.unlink()                              # else the kept executable serves it
  out = TracedOnce(_counted(traces), "toy", "k", folder=tmp_path)(*args)
  assert len(traces) == 2 and float(out[1]["total"]) == 9.0
  TracedOnce(_counted(traces), "toy", "k", folder=tmp_path)(*args)
  assert len(traces) == 2                          # the rewritten file loads


def test_the_kept_folder_is_bounded_least_recently_used_first(tmp_path, monkeypatch):
  args = ({"a": jnp.ones(3)}, jnp.ones(2), jnp.float32(1.0))
  TracedOnce(_counted([]), "toy", "old", folder=tmp_path)(*args)
  one_program = sum(f.stat().st_size for f in tmp_path.iterdir())
  TracedOnce(_counted([]), "toy", "used", folder=tmp_path)(*args)
  for f in tmp_path.iterdir():      # both written long ago, each trace before its executable
    os.utime(f, (999.0 if f.suffix == ".bin" else 1000.0,) * 2)
  traces = []
  TracedOnce(_counted(traces), "toy", "used", folder=tmp_path)(*args)   # read: used now
  assert not traces
  # Room for two programs: a third one's files evict the least recently used's.
  monkeypatch.setattr(exported, "MAX_KEPT_BYTES", int(2.5 * one_program))
  TracedOnce(_counted([]), "toy", "new", folder=tmp_path)(*args)
  assert len(list(tmp_path.glob("toy-*.bin"))) == 2
  TracedOnce(_counted(traces), "toy", "used", folder=tmp_path)(*args)
  assert not traces                                 # still kept
  TracedOnce(_counted(traces), "toy", "old", folder=tmp_path)(*args)
  assert len(traces) == 1                           # evicted: traced again


def _count_compiles(compiles):
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, s, **_: compiles.append(1)
      if event == "/jax/core/compile/backend_compile_duration" else None)


def test_the_compiled_executable_is_kept_and_loaded_without_compiling(tmp_path):
  traces, compiles = [], []
  _count_compiles(compiles)
  state = {"a": jnp.arange(4.0), "b": (jnp.ones((2, 3)),)}
  x, scale = jnp.full((5,), 0.5), jnp.float32(2.0)
  want = jax.jit(_counted([]))(state, x, scale)
  TracedOnce(_counted(traces), "toy", "v1", donate_argnums=(0,), folder=tmp_path)(
      jax.tree.map(jnp.copy, state), x, scale)
  (executable,) = tmp_path.glob("toy-*.xla")
  before = len(compiles)
  again = TracedOnce(_counted(traces), "toy", "v1", donate_argnums=(0,), folder=tmp_path)
  donated = jax.tree.map(jnp.copy, state)
  out = again(donated, x, scale)
  assert len(compiles) == before and len(traces) == 1     # loaded: nothing compiled
  jax.tree.map(np.testing.assert_array_equal, out, want)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(donated))   # donation kept
  # A truncated executable is compiled again (from the kept trace) and replaced.
  executable.write_bytes(executable.read_bytes()[:100])
  out = TracedOnce(_counted(traces), "toy", "v1", donate_argnums=(0,), folder=tmp_path)(
      jax.tree.map(jnp.copy, state), x, scale)
  assert len(compiles) == before + 1 and len(traces) == 1
  jax.tree.map(np.testing.assert_array_equal, out, want)
  TracedOnce(_counted(traces), "toy", "v1", folder=tmp_path, donate_argnums=(0,))(
      jax.tree.map(jnp.copy, state), x, scale)
  assert len(compiles) == before + 1                      # the rewritten one loads


def test_an_executable_from_the_compilation_cache_is_not_kept(tmp_path):
  # XLA:CPU cannot re-serialize an executable it loaded from the cache (its kernels
  # are missing when it runs), so only a real compile is kept.
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  compilation_cache.reset_cache()
  try:
    args = ({"a": jnp.arange(3.0) + 7}, jnp.ones(11), jnp.float32(5.0))
    TracedOnce(_counted([]), "cached", "k", folder=tmp_path / "first")(*args)
    assert len(list((tmp_path / "first").glob("*.xla"))) == 1
    # Another folder: traced again, the same program, a compilation-cache hit.
    out = TracedOnce(_counted([]), "cached", "k", folder=tmp_path / "second")(*args)
    assert list((tmp_path / "second").glob("*.xla")) == []
    np.testing.assert_array_equal(out[0]["a"], (np.arange(3.0) + 7) * 5 + 11)
  finally:                               # the fixture restores the process's settings
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()


def test_a_trainer_in_a_new_process_steps_from_the_saved_trace(tmp_path, monkeypatch):
  from optimas_jax.lrf import train as train_lib
  from optimas_jax.lrf.config import default_lrf_config
  from optimas_jax.lrf.model import build_lrf
  from optimas_jax.models.registry import load_backbone
  monkeypatch.setattr(exported, "_folder", lambda: tmp_path)
  backbone = load_backbone("tiny-bert")
  cfg = default_lrf_config()
  cfg.trainable, cfg.max_len, cfg.buckets = "top", 16, (16,)
  cfg.groups_per_batch, cfg.max_candidates = 2, 3
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(5, 200, (1, 2, 3, 16)).astype(np.int32),
           "mask": np.ones((1, 2, 3, 16), np.int32), "component": np.zeros((1, 2), np.int32),
           "mc": rng.normal(size=(1, 2, 3)).astype(np.float32),
           "valid": np.ones((1, 2, 3), bool)}

  def one_step(precompile=False):
    t = train_lib.Trainer(build_lrf(backbone, 1, cfg), cfg, 1, 10)
    state = t.init_state(jax.random.PRNGKey(0), backbone.params)
    step_batch = jax.tree.map(jnp.asarray, batch)
    if precompile:                          # the program ready, the state untouched
      t.precompile(state, step_batch, jax.random.PRNGKey(0))
      assert not any(x.is_deleted() for x in jax.tree.leaves(state))
    state, metrics = t.step_fn(state, step_batch, jax.random.PRNGKey(0))
    assert t.jitted_step.programs() == 1
    return jax.device_get((state.trainable, metrics))

  first = one_step()
  traces = []
  real = train_lib.train_step
  monkeypatch.setattr(train_lib, "train_step",
                      lambda *a, **k: traces.append(1) or real(*a, **k))
  second = one_step(precompile=True)
  assert traces == [] and len(list(tmp_path.glob("lrf_train_step-*.bin"))) == 1
  jax.tree.map(np.testing.assert_array_equal, second, first)


def test_a_program_export_cannot_hold_runs_as_a_plain_jit(tmp_path):
  def with_callback(x):
    return jax.pure_callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype),
                             x) + 1
  f = TracedOnce(with_callback, "callback", "k", folder=tmp_path)
  np.testing.assert_array_equal(f(jnp.arange(3.0)), [1.0, 3.0, 5.0])
  assert list(tmp_path.glob("*.bin")) == []


def test_abstract_shapes_are_kept_and_read_back(tmp_path, monkeypatch):
  monkeypatch.setattr(exported, "_folder", lambda: tmp_path)
  traces = []

  def init(x):
    traces.append(1)
    return {"w": jnp.zeros((x.shape[0], 3), jnp.bfloat16), "b": {"c": x.sum()}}

  first = exported.eval_shape_once(init, "shapes", "k", jnp.ones((4,)))
  again = exported.eval_shape_once(init, "shapes", "k", jnp.ones((4,)))
  other = exported.eval_shape_once(init, "shapes", "k", jnp.ones((5,)))
  assert len(traces) == 2 and again == first
  assert again["w"] == jax.ShapeDtypeStruct((4, 3), jnp.bfloat16)
  assert other["w"].shape == (5, 3)


@pytest.mark.parametrize("kept_on_disk", [True, False])
def test_precompile_readies_the_program_without_running_it(tmp_path, monkeypatch, kept_on_disk):
  if not kept_on_disk:                     # no compilation cache folder: the plain jit
    monkeypatch.setattr(exported, "_folder", lambda: None)
  traces, compiles = [], []
  _count_compiles(compiles)
  state = {"a": jnp.arange(4.0)}
  x, scale = jnp.ones(3), jnp.float32(3.0)
  step = TracedOnce(_counted(traces), "toy", "pre", donate_argnums=(0,),
                    folder=tmp_path if kept_on_disk else None)
  step.precompile(state, x, scale)
  assert not state["a"].is_deleted()        # not run: the donated argument is intact
  assert step.programs() == 1 and len(traces) == 1
  before = len(compiles)
  out, _ = step(state, x, scale)
  assert len(compiles) == before and len(traces) == 1   # the first call compiles nothing
  np.testing.assert_array_equal(out["a"], np.arange(4.0) * 3 + 3)
  assert state["a"].is_deleted()


def test_a_none_in_the_shardings_takes_a_committed_arguments_own(tmp_path):
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  repl = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("d",)), P())
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state = {"a": jax.device_put(jnp.arange(4.0), one), "b": jnp.ones((2, 2))}  # b: uncommitted
  args = (state, jnp.ones(3), jnp.float32(2.0))
  want = jax.jit(_counted([]))(*args)
  for _ in range(2):                     # traced and kept, then read back
    f = TracedOnce(_counted([]), "own", "k", folder=tmp_path, in_shardings=(None, repl, repl))
    assert f._flat_in_shardings(args) == (one, None, repl, repl)  # pylint: disable=protected-access
    jax.tree.map(np.testing.assert_array_equal, f(*args), want)


@pytest.mark.parametrize("kept_on_disk", [True, False])
def test_python_and_numpy_leaves_are_taken_as_jit_takes_them(tmp_path, monkeypatch, kept_on_disk):
  if not kept_on_disk:
    monkeypatch.setattr(exported, "_folder", lambda: None)
  state = {"a": jnp.arange(3.0), "scaling": 0.5, "n": np.int32(2)}   # a LoRA adapter's shape
  want = jax.jit(_counted([]))(state, np.ones(2), 3.0)
  for _ in range(2):
    f = TracedOnce(_counted([]), "mixed", "k", folder=tmp_path if kept_on_disk else None)
    got = f(state, np.ones(2), 3.0)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert got[0]["scaling"].dtype == want[0]["scaling"].dtype == jnp.float32
    assert f.programs() == 1
