"""Subprocess with 4 fake CPU devices: the PPO update of test_update on a 4-way mesh.

argv: the npz the parent wrote (minibatches and the tiny base weights) and
the base digest the parent computed.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys

import flax
import jax
import numpy as np

from optimas_jax.models import llama
from optimas_jax.models import lora
from optimas_jax.rl.update import Updater
from tests.rl.conftest import PPO


def main(path: str, digest: str):
  assert jax.device_count() == 4, jax.devices()
  module = llama.LlamaDecoder(llama.LlamaConfig.tiny())
  with np.load(path) as data:
    batches, flat_base = {}, {}
    for key in data.files:
      first, rest = key.split("/", 1)
      if first == "base":
        flat_base[rest] = data[key]
      else:
        batches.setdefault(int(first), {})[rest] = data[key]
  base = flax.traverse_util.unflatten_dict(flat_base, sep="/")
  assert lora.base_digest(base) == digest, "base weights changed on the way"
  updater = Updater(module, PPO)
  assert updater.devices == 4
  state = updater.init_state(lora.init_adapter(PPO.lora, base, 0), 32)
  on_mesh = updater.place_base(base)
  out = {k: [] for k in ("loss", "kl", "clip_fraction", "grad_norm")}
  for i in sorted(batches):
    batch = jax.device_put(batches[i], updater.micro_rows)
    state, m = updater.update(state, batch, on_mesh)
    for k in out:
      out[k].append(float(m[k]))
  out["shards"] = len(batch["completion_ids"].sharding.device_set)
  out["params"] = np.concatenate([np.ravel(x) for x in
                                  jax.tree.leaves(jax.device_get(state.trainable))]).tolist()
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(*sys.argv[1:])
