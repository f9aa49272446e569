"""Subprocess: the PPO update of test_update on a 4-way mesh of fake CPU devices, in one
process (4 devices) or in one of two processes (2 devices each, jax.distributed),
with every row running its own prompt or (PROMPT_GROUP) each run of equal prompts once.

argv: the npz the parent wrote (minibatches and the tiny base weights), the
base digest the parent computed, and for two processes: coordinator address,
process id.
"""

import os
import sys

TWO_PROCESSES = len(sys.argv) == 5
os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count="
                           + ("2" if TWO_PROCESSES else "4"))

import json  # pylint: disable=g-import-not-at-top,wrong-import-position

import flax
import jax
import numpy as np
from jax.sharding import Mesh

from optimas_jax.core.mesh import to_global, to_host
from optimas_jax.models import llama
from optimas_jax.models import lora
from optimas_jax.rl.update import Updater
from tests.rl.conftest import PPO


def main(path: str, digest: str, coordinator: str = "", process_id: str = "0"):
  if coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=2, process_id=int(process_id))
    assert jax.process_count() == 2
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
  # MESH=DxF: a ("data", "fsdp") mesh of that shape (default 4x1: data parallel).
  data, fsdp = map(int, os.environ.get("MESH", "4x1").split("x"))
  updater = Updater(module, PPO, mesh=Mesh(np.array(jax.devices()).reshape(data, fsdp),
                                           ("data", "fsdp")))
  assert updater.devices == 4
  # PROMPT_GROUP=g: the update that runs each run of g equal prompts once.
  update, _ = updater.programs(int(os.environ.get("PROMPT_GROUP", "1")))
  state = updater.init_state(lora.init_adapter(PPO.lora, base, 0), 32)
  on_mesh = updater.place_base(base)
  split = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(on_mesh))
  out = {k: [] for k in ("loss", "kl", "clip_fraction", "grad_norm")}
  for i in sorted(batches):
    batch = to_global(batches[i], updater.micro_rows)
    state, m = update(state, batch, on_mesh)
    for k in out:
      out[k].append(float(m[k]))
  out["shards"] = len(batch["completion_ids"].sharding.device_set)
  out["split_base_leaves"] = split
  out["params"] = np.concatenate([np.ravel(x) for x in
                                  jax.tree.leaves(to_host(state.trainable))]).tolist()
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(*sys.argv[1:])
