"""Run in a subprocess with N fake CPU devices (argv[1]): the LRF step on 2-D meshes
("data", "fsdp") of every shape argv[2:] names (e.g. 1x4 2x2), and on one device."""

import os
import sys

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib
import tempfile

import jax
import numpy as np
from jax.sharding import Mesh

from optimas_jax.core import exported
from optimas_jax.core.mesh import per_device_bytes
from optimas_jax.lrf import datasets
from optimas_jax.lrf.buckets import plan_epoch
from optimas_jax.lrf.data import encode_groups
from optimas_jax.lrf.text import TextEncoder
from optimas_jax.lrf.train import Trainer
from optimas_jax.models.registry import load_backbone
from tests.lrf.conftest import make_lrf, small_cfg


def main(devices: int, shapes: list[str]):
  assert jax.device_count() == devices, jax.devices()
  # Every step goes through its exported (traced-once) program, shardings included.
  folder = pathlib.Path(tempfile.mkdtemp(prefix="traced-"))
  exported._folder = lambda: folder
  bb = load_backbone("tiny-bert")
  train, _ = datasets.synthetic_groups(0, n=32)
  enc = TextEncoder(bb.tokenizer, ["d"], 64)
  groups = encode_groups(train, enc, 4)
  plan = plan_epoch(groups, (32, 64), 8, 0, 0)
  out = {}
  meshes = {"one": Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))}
  for shape in shapes:
    data, fsdp = map(int, shape.split("x"))
    meshes[shape] = Mesh(np.array(jax.devices()[:data * fsdp]).reshape(data, fsdp),
                         ("data", "fsdp"))
  for name, mesh in meshes.items():
    cfg = small_cfg(trainable="full", cache_frozen=False, accum_steps=2,
                    groups_per_batch=8)
    t = Trainer(make_lrf(bb, trainable="full"), cfg, 2, total_steps=10, mesh=mesh)
    state = t.init_state(jax.random.PRNGKey(0), bb.params)
    held = per_device_bytes((state.trainable, state.opt_state))
    split = sum(1 for leaf in jax.tree.leaves(state.trainable)
                if len(leaf.sharding.device_set) > 1 and not leaf.sharding.is_fully_replicated)
    losses, norms = [], []
    for length, idxs in plan[:2]:
      batch = t.batch(groups, idxs, length)
      state, m = t.step_fn(state, batch, jax.random.PRNGKey(1))
      losses.append(float(m["loss"]))
      norms.append([float(m["grad_norm"])] + np.asarray(m["head_grad_norm"]).tolist())
    leaves = [np.asarray(x).ravel().tolist()
              for x in jax.tree.leaves(jax.device_get(state.trainable))]
    split_after = sum(1 for leaf in jax.tree.leaves(state.trainable)
                      if len(leaf.sharding.device_set) > 1
                      and not leaf.sharding.is_fully_replicated)
    out[name] = dict(losses=losses, norms=norms, params=leaves, lr=cfg.optim.lr,
                     shards=len(batch["tokens"].sharding.device_set), split_leaves=split,
                     split_after=split_after, state_bytes=held,
                     traced_programs=t.jitted_step.programs(),
                     traced_files=len(list(folder.glob("lrf_train_step-*.bin"))))
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2:])
