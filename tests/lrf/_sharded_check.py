"""Run in a subprocess with 4 fake CPU devices: sharded step vs 1-device step."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax
import numpy as np
from jax.sharding import Mesh

from optimas_jax.lrf import datasets
from optimas_jax.lrf.buckets import plan_epoch
from optimas_jax.lrf.data import encode_groups
from optimas_jax.lrf.text import TextEncoder
from optimas_jax.lrf.train import Trainer
from optimas_jax.models.registry import load_backbone
from tests.lrf.conftest import make_lrf, small_cfg


def main():
  assert jax.device_count() == 4, jax.devices()
  bb = load_backbone("tiny-bert")
  train, _ = datasets.synthetic_groups(0, n=32)
  enc = TextEncoder(bb.tokenizer, ["d"], 64)
  groups = encode_groups(train, enc, 4)
  plan = plan_epoch(groups, (32, 64), 8, 0, 0)
  out = {}
  for name, devs in (("one", jax.devices()[:1]), ("four", jax.devices())):
    cfg = small_cfg(trainable="top", cache_frozen=False, accum_steps=2)
    t = Trainer(make_lrf(bb, trainable="top"), cfg, 2, total_steps=10,
                mesh=Mesh(np.array(devs), ("data",)))
    state = t.init_state(jax.random.PRNGKey(0), bb.params)
    losses, norms = [], []
    for length, idxs in plan[:2]:
      batch = t.batch(groups, idxs, length)
      state, m = t.step_fn(state, batch, jax.random.PRNGKey(1))
      losses.append(float(m["loss"]))
      norms.append([float(m["grad_norm"])] + np.asarray(m["head_grad_norm"]).tolist())
    shards = len(batch["tokens"].sharding.device_set)
    leaves = [np.asarray(x).ravel().tolist()
              for x in jax.tree.leaves(jax.device_get(state.trainable))]
    out[name] = dict(losses=losses, norms=norms, shards=shards, params=leaves,
                     lr=cfg.optim.lr)
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main()
