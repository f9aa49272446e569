"""Orbax checkpoints of the full LRF train state plus a JSON sidecar."""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp


def manager(workdir, max_to_keep: int = 2) -> ocp.CheckpointManager:
  path = pathlib.Path(workdir).absolute() / "checkpoints"
  return ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                 create=True))


def save(mngr: ocp.CheckpointManager, state, meta: dict, force: bool = False):
  step = int(jax.device_get(state.step))
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)),
            force=force)


def restore_latest(mngr: ocp.CheckpointManager, like_state):
  """(state, meta) from the latest checkpoint, shaped and sharded like
  `like_state`; None when the directory holds none."""
  step = mngr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return out["state"], out["meta"]
