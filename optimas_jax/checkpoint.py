"""Atomic Orbax checkpoints: an array pytree plus a JSON sidecar per step.

The one checkpoint module of the house. The loop keeps one step per
iteration (the LRF's trained part and every model-parameters variable as
arrays; iteration, configuration values, replay buffers, selector, prompt
histories, counters and history as JSON); `lrf.run` keeps the full LRF
TrainState every `config.lrf.checkpoint_every` steps. Arrays go through
StandardSave and come back through StandardRestore into an abstract target
(shapes, dtypes and shardings of a live pytree). Orbax writes to a temp
folder and renames it, so a crash never leaves a half-written step.
Plain folders (a SystemConfig, a LoRA adapter) get the same all-or-nothing
write from `atomic.replaced_directory`.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp


def manager(directory, max_to_keep: int | None = 3) -> ocp.CheckpointManager:
  """A manager over `directory` (the checkpoints folder itself; created)."""
  path = pathlib.Path(directory).absolute()
  return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, arrays, meta: dict) -> None:
  """Writes step `step` and waits: the caller may donate `arrays` right after."""
  mngr.save(int(step), args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                               meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, step: int, like_arrays) -> tuple:
  """(arrays, meta) of `step`, shaped, typed and sharded like `like_arrays`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_arrays)
  out = mngr.restore(int(step), args=ocp.args.Composite(
      arrays=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return out["arrays"], out["meta"]


def restore_latest(mngr: ocp.CheckpointManager, like_arrays) -> tuple | None:
  """`restore` of the latest step; None when the folder holds no step."""
  step = mngr.latest_step()
  if step is None:
    return None
  return restore(mngr, step, like_arrays)


def resolve_init_from(path: str) -> tuple[pathlib.Path, int]:
  """`DIR` (latest step), `DIR/<step>`, `DIR/checkpoints` or `DIR/checkpoints/<step>`.

  Returns (checkpoints folder, step).
  """
  p = pathlib.Path(path).absolute()
  if p.name.isdigit() and p.parent.name == "checkpoints":
    return p.parent, int(p.name)
  if p.name.isdigit() and (p.parent / "checkpoints" / p.name).is_dir():
    return p.parent / "checkpoints", int(p.name)
  if (p / "checkpoints").is_dir():
    p = p / "checkpoints"
  steps = sorted(int(c.name) for c in p.glob("*") if c.name.isdigit()) if p.is_dir() else []
  if not steps:
    raise FileNotFoundError(f"config.init_from={path!r}: no checkpoint steps under {p}; "
                            "give a run's workdir or DIR/checkpoints/<step>")
  return p, steps[-1]
