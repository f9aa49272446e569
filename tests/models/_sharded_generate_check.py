"""Subprocess: tiny-llama's greedy and sampled decoding on ("data", "fsdp") meshes of fake
CPU devices against one device, and an RL trainer's sampler on the updater's base.

argv: device count, then mesh shapes DxF (each uses the first D*F devices).
"""

import os
import sys

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"

import json  # pylint: disable=wrong-import-position

import jax
import numpy as np
from jax.sharding import Mesh

from optimas_jax.core import mesh as mesh_lib
from optimas_jax.llm.local import LocalLLM
from optimas_jax.models import generate as gen_lib
from optimas_jax.models import registry
from optimas_jax.rl.config import RLConfig
from optimas_jax.rl.trainer import RLTrainer

PROMPTS = [[1, 5, 9, 13], [2, 7], [3, 3, 3, 3, 3, 3, 3], [4, 8, 15], [6], [11, 12, 13, 14, 15]]


def decode(generator, params=None):
  kw = dict(max_new_tokens=6, stop_ids=())
  greedy = generator.generate_ids(PROMPTS, params=params, **kw)
  sampled = generator.generate_ids(PROMPTS, params=params, temperature=1.0,
                                   rng=jax.random.key(7), **kw)
  return {"greedy": [c.tokens for c in greedy], "sampled": [c.tokens for c in sampled],
          "logprobs": [c.logprobs for c in greedy + sampled]}


def main(devices: str, *shapes: str):
  backbone = registry.load_backbone("tiny-llama")
  one = gen_lib.Generator(backbone.module, backbone.params, backbone.pad_id, prompt_multiple=8)
  out = {"one": decode(one)}
  for shape in shapes:
    data, fsdp = map(int, shape.split("x"))
    mesh = Mesh(np.array(jax.devices()[:data * fsdp]).reshape(data, fsdp), ("data", "fsdp"))
    params = mesh_lib.place(backbone.params, mesh_lib.fsdp_shardings(backbone.params, mesh))
    gen = gen_lib.Generator(backbone.module, params, backbone.pad_id, prompt_multiple=8,
                            mesh=mesh)
    got = decode(gen)
    got["split_leaves"] = sum(not x.sharding.is_fully_replicated
                              for x in jax.tree.leaves(params))
    got["param_bytes"] = mesh_lib.per_device_bytes(params)
    out[shape] = got
  out["one"]["param_bytes"] = mesh_lib.per_device_bytes(backbone.params)
  # An RL trainer samples with the updater's base: one copy of the weights per device set.
  mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("data", "fsdp"))
  llm = LocalLLM(registry.load_backbone("tiny-llama"), prompt_multiple=8)
  trainer = RLTrainer(llm, RLConfig(group_size=2, max_new_tokens=4), mesh=mesh)
  same = jax.tree.leaves(jax.tree.map(lambda a, b: a is b, llm.generator.params,
                                      trainer.base_on_mesh))
  out["trainer"] = {"shares_base": all(same), "generator_mesh": llm.generator.mesh is mesh}
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(*sys.argv[1:])
