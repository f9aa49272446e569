"""A jitted function traced once per machine: its lowered program kept on disk.

XLA's persistent compilation cache skips the compile, not the Python trace and the
lowering before it: for MiniLM's full fine-tune step these are 1.3 s and 0.5 s of
a warm trainer's set-up. `TracedOnce` keeps the traced program (`jax.export`,
serialized StableHLO) next to the compilation cache, so a later process
deserializes it (~0.02 s) and goes straight to the (cached) compile.

The file's key holds everything the trace reads: the caller's `static_key` (the
configuration baked into the program), the argument tree, shapes, dtypes and
shardings, donation and compiler options, the jax/jaxlib/flax/optax versions, and
a digest of this package's source, so any code change traces afresh. Without a
compilation cache folder, or without the `flatbuffers` package that serialization
needs, it is a plain `jax.jit`.

The compiled executable is kept too (`.xla`, one process only): loading it directly
skips the lowering of the saved program and the compilation cache's key (a hash of
the whole module), 0.3 s of MiniLM's step. Its key adds what the compile reads
beyond the program: $XLA_FLAGS, the device kind and the CPU's features. It is
written only after a real compile: XLA:CPU does not re-serialize an executable that
was itself loaded from the compilation cache (its kernels are missing at run time).

The folder is bounded (`MAX_KEPT_BYTES`): every source change keys new files, so
the least recently used are removed past the bound (`core/disk_cache.py`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import tempfile
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import serialize_executable

from optimas_jax.core import disk_cache

_PACKAGE = pathlib.Path(__file__).resolve().parents[1]
# Kept programs, executables and shapes per machine: ~40 versions of MiniLM's step
# and SmolLM2's decode programs.
MAX_KEPT_BYTES = 1 << 30


@functools.cache
def source_digest() -> str:
  """blake2b of every .py file of the package (path and bytes), in path order."""
  h = hashlib.blake2b(digest_size=16)
  for path in sorted(_PACKAGE.rglob("*.py")):
    h.update(str(path.relative_to(_PACKAGE)).encode())
    h.update(path.read_bytes())
  return h.hexdigest()


@functools.cache
def _versions() -> str:
  names = ("jax", "jaxlib", "flax", "optax")
  out = []
  for name in names:
    try:
      out.append(f"{name}={importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      out.append(f"{name}=none")
  return ",".join(out)


@functools.cache
def _can_serialize() -> bool:
  try:
    import flatbuffers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def _folder() -> pathlib.Path | None:
  cache = jax.config.jax_compilation_cache_dir
  if not cache or not _can_serialize():
    return None
  return pathlib.Path(cache) / "traced"


class TracedOnce:
  """`jax.jit(fn, ...)`, whose traced program is reused across processes.

  `static_key` must name every Python value the trace reads that is not an
  argument (configuration, schedule constants, model hyperparameters); the
  package's source is in the key, a monkeypatched function is not.
  `programs()` counts the distinct argument signatures seen (one program each).
  """

  def __init__(self, fn: Callable, name: str, static_key: str, *, in_shardings=None,
               out_shardings=None, donate_argnums: tuple[int, ...] = (),
               compiler_options: dict | None = None, folder: str | None = None):
    self.fn, self.name, self.static_key = fn, name, static_key
    self.folder = folder          # None: <compilation cache>/traced
    self.in_shardings, self.out_shardings = in_shardings, out_shardings
    self.donate_argnums = tuple(donate_argnums)
    self.compiler_options = compiler_options
    jit_kw = {} if in_shardings is None else {"in_shardings": in_shardings}
    if out_shardings is not None:
      jit_kw["out_shardings"] = out_shardings
    self._jit = jax.jit(fn, donate_argnums=self.donate_argnums,
                        compiler_options=compiler_options, **jit_kw)
    self._calls: dict[Any, Callable] = {}

  def programs(self) -> int:
    return len(self._calls)

  def __call__(self, *args):
    args, leaves, treedef = _flatten(args)
    return self._call_for(args, leaves, treedef)(args, leaves)

  def precompile(self, *args) -> None:
    """Gets the program for these arguments' signature ready (traced or read, compiled
    or loaded) without running it: a warm-up that needs no throwaway copy of donated
    arguments."""
    args, leaves, treedef = _flatten(args)
    self._call_for(args, leaves, treedef)

  def _call_for(self, args, leaves, treedef) -> Callable:
    signature = (treedef, tuple((x.shape, x.dtype, getattr(x, "weak_type", False),
                                 getattr(x, "sharding", None)) for x in leaves))
    call = self._calls.get(signature)
    if call is None:
      call = self._calls[signature] = self._build(args, leaves, treedef)
    return call

  # -- building -------------------------------------------------------------

  def _build(self, args, leaves, treedef) -> Callable:
    folder = pathlib.Path(self.folder) if self.folder and _can_serialize() else _folder()
    if folder is None:
      return self._plain(args)
    stem = f"{self.name}-{self._key(leaves, treedef)}"
    path = folder / f"{stem}.bin"
    executable = folder / f"{stem}-{_compile_digest()}.xla"
    kept = _load_executable(executable)
    if kept is not None:
      disk_cache.touch(path)        # the program behind it is in use too
      compiled, out_tree = kept
      return lambda args, leaves: jax.tree.unflatten(out_tree, compiled(*leaves))
    exported = out_tree = None
    if path.exists():
      try:
        exported, out_tree = self._load(path)
      except Exception as e:  # pylint: disable=broad-except
        # A truncated or foreign file: trace afresh and overwrite it.
        logging.warning("traced program %s unreadable (%s); tracing again", path, e)
    if exported is None:
      try:
        exported, out_tree = self._export(args, leaves, treedef)
        self._save(path, exported, out_tree)
      except Exception as e:  # pylint: disable=broad-except
        # A program jax.export cannot hold (say, a host callback): the plain jit.
        logging.warning("%s: not kept on disk (%s: %s); traced per process", self.name,
                        type(e).__name__, e)
        return self._plain(args)
    donated = [i for i, n in enumerate(self._leaf_owner(args)) if n in self.donate_argnums]
    call = jax.jit(exported.call, in_shardings=self._flat_in_shardings(args),
                   donate_argnums=tuple(donated), compiler_options=self.compiler_options)
    compiled, fresh = _compile(call.lower(*leaves))
    if fresh:
      _save_executable(executable, compiled, out_tree)
    return lambda args, leaves: jax.tree.unflatten(out_tree, compiled(*leaves))

  def _plain(self, args) -> Callable:
    """The plain jit's program for this signature, compiled ahead of its first call."""
    compiled = self._jit.lower(*args).compile()
    return lambda args, leaves: compiled(*args)

  def _flat_in_shardings(self, args):
    """One sharding per flat leaf, from the `in_shardings` prefix. A None in it: a
    committed argument's own sharding, else unspecified (placed by `jax.jit`)."""
    if self.in_shardings is None:
      return None
    is_spec = lambda x: x is None or isinstance(x, jax.sharding.Sharding)
    prefix = self.in_shardings
    if is_spec(prefix):
      prefix = (prefix,) * len(args)
    out = []
    for spec, arg in zip(prefix, args):
      specs = jax.tree.leaves(jax.tree.map(lambda s, sub: [s] * len(jax.tree.leaves(sub)),
                                           spec, arg, is_leaf=is_spec), is_leaf=is_spec)
      out += [s if s is not None else x.sharding if getattr(x, "committed", False) else None
              for s, x in zip(specs, jax.tree.leaves(arg), strict=True)]
    return tuple(out)

  def _key(self, leaves, treedef) -> str:
    return _digest([self.name, self.static_key, str(treedef), repr(self.donate_argnums),
                    repr(sorted((self.compiler_options or {}).items()))]
                   + [f"{x.shape}|{x.dtype}|{getattr(x, 'weak_type', False)}|"
                      f"{getattr(x, 'sharding', None)}" for x in leaves])

  @staticmethod
  def _leaf_owner(args) -> list[int]:
    """For each flat leaf, the index of the argument it belongs to."""
    return [i for i, a in enumerate(args) for _ in jax.tree.leaves(a)]

  def _export(self, args, leaves, treedef):
    out_tree = []

    def flat(*xs):
      out = self.fn(*jax.tree.unflatten(treedef, xs))
      if self.out_shardings is not None:
        out = jax.lax.with_sharding_constraint(out, self.out_shardings)
      out_leaves, tree = jax.tree.flatten(out)
      out_tree.append(tree)
      return out_leaves

    jitted = jax.jit(flat, in_shardings=self._flat_in_shardings(args))
    exported = jax.export.export(jitted)(*leaves)
    return exported, out_tree[0]

  @staticmethod
  def _load(path: pathlib.Path):
    blob = path.read_bytes()
    tree_len = int.from_bytes(blob[:8], "little")
    out_tree = pickle.loads(blob[8:8 + tree_len])
    exported = jax.export.deserialize(bytearray(blob[8 + tree_len:]))
    disk_cache.touch(path)
    return exported, out_tree

  @staticmethod
  def _save(path: pathlib.Path, exported, out_tree) -> None:
    tree = pickle.dumps(out_tree)
    _write_atomic(path, len(tree).to_bytes(8, "little") + tree + bytes(exported.serialize()))


def _flatten(args):
  """(args, leaves, treedef) with Python and numpy scalars and arrays as jax arrays
  (as `jax.jit` takes them: a Python number weakly typed)."""
  leaves, treedef = jax.tree.flatten(args)
  if all(isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) for x in leaves):
    return args, leaves, treedef
  leaves = [x if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) else jnp.asarray(x)
            for x in leaves]
  return jax.tree.unflatten(treedef, leaves), leaves, treedef


# -- compiled executables on disk ---------------------------------------------

_compiling = threading.local()      # per thread: compilation-cache hits seen


def _count_cache_hit(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _compiling.hits = getattr(_compiling, "hits", 0) + 1


@functools.cache
def _listen_for_cache_hits() -> None:
  jax.monitoring.register_event_listener(_count_cache_hit)


def _compile(lowered):
  """(compiled, fresh): fresh is False when the compilation cache supplied it."""
  _listen_for_cache_hits()
  before = getattr(_compiling, "hits", 0)
  compiled = lowered.compile()
  return compiled, getattr(_compiling, "hits", 0) == before


@functools.cache
def _compile_digest() -> str:
  """What an executable depends on beyond its program: flags, device, CPU features."""
  try:
    flags = next((line for line in open("/proc/cpuinfo", encoding="utf-8")
                  if line.startswith(("flags", "Features"))), "")
  except OSError:
    flags = ""
  device = jax.devices()[0]
  return _digest([os.environ.get("XLA_FLAGS", ""), device.device_kind,
                  device.client.platform_version, flags])[:16]


def _save_executable(path: pathlib.Path, compiled, out_tree) -> None:
  """Keeps a freshly compiled executable (single process only; best effort)."""
  if jax.process_count() != 1:
    return
  try:
    payload, in_tree, flat_out_tree = serialize_executable.serialize(compiled)
    devices = [d.id for d in compiled._executable._unloaded_executable.device_list]  # pylint: disable=protected-access
    _write_atomic(path, pickle.dumps(dict(payload=payload, in_tree=in_tree,
                                          flat_out_tree=flat_out_tree, out_tree=out_tree,
                                          devices=devices)))
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("%s: executable not kept (%s: %s)", path.name, type(e).__name__, e)


def _load_executable(path: pathlib.Path):
  """(compiled, out_tree) from a kept executable; None if absent or unusable."""
  if jax.process_count() != 1 or not path.exists():
    return None
  try:
    kept = pickle.loads(path.read_bytes())
    by_id = {d.id: d for d in jax.local_devices()}
    devices = [by_id[i] for i in kept["devices"]]
    compiled = serialize_executable.deserialize_and_load(
        kept["payload"], kept["in_tree"], kept["flat_out_tree"],
        execution_devices=devices)
    disk_cache.touch(path)
    return compiled, kept["out_tree"]
  except Exception as e:  # pylint: disable=broad-except
    # A truncated or foreign file: compile again (and overwrite it).
    logging.warning("executable %s unusable (%s: %s); compiling", path.name,
                    type(e).__name__, e)
    return None


def eval_shape_once(fn: Callable, name: str, static_key: str, *args):
  """`jax.eval_shape(fn, *args)`, kept on disk next to `TracedOnce`'s programs.

  An abstract trace of a whole model's init (to check loaded weights against it)
  costs 0.3 s of a warm set-up for MiniLM. The shapes are keyed like a program:
  `static_key` (what the trace reads), the arguments' tree, shapes and dtypes,
  the library versions and the package's source.
  """
  folder = _folder()
  if folder is None:
    return jax.eval_shape(fn, *args)
  leaves, treedef = jax.tree.flatten(args)
  key = _digest([name, static_key, str(treedef)]
                + [f"{tuple(x.shape)}|{x.dtype}" for x in leaves])
  path = folder / f"{name}-{key}.shapes"
  try:
    kept = pickle.loads(path.read_bytes())
    disk_cache.touch(path)
    return jax.tree.map(lambda sd: jax.ShapeDtypeStruct(sd[0], jnp.dtype(sd[1])), kept,
                        is_leaf=lambda x: isinstance(x, tuple))
  except Exception:  # pylint: disable=broad-except  (absent or unreadable: trace)
    pass
  out = jax.eval_shape(fn, *args)
  _write_atomic(path, pickle.dumps(jax.tree.map(lambda s: (tuple(s.shape), str(s.dtype)), out)))
  return out


def _digest(parts) -> str:
  h = hashlib.blake2b(digest_size=16)
  for part in [*parts, _versions(), source_digest(), jax.default_backend(),
               str(jax.device_count())]:
    h.update(str(part).encode())
    h.update(b"\0")
  return h.hexdigest()


def _write_atomic(path: pathlib.Path, blob: bytes) -> None:
  """A reader sees no file or the whole one (several processes may write it); then the
  folder's least recently used files go past `MAX_KEPT_BYTES`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(blob)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  kept = [f for f in path.parent.iterdir() if not f.name.startswith(".")]
  disk_cache.evict(kept, max_bytes=MAX_KEPT_BYTES, keep=path)
