"""The jitted update: what changes, KL at init, one compile, 1 vs 4 devices."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import chex
import flax
import jax
import numpy as np
import pytest

from optimas_jax.models import lora
from tests.rl.conftest import PPO, update_batch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _fresh_state(updater, base):
  return updater.init_state(lora.init_adapter(PPO.lora, base, 0), 32)


def _run(updater, state, batches, base):
  metrics = []
  for batch in batches:
    state, m = updater.update(state, jax.device_put(batch, updater.micro_rows),
                              updater.place_base(base))
    metrics.append(jax.device_get(m))
  return state, metrics


def test_only_adapter_and_value_head_change_and_kl_starts_at_zero(tiny_backbone, ppo_updater):
  base = tiny_backbone.params
  base_before = jax.tree.map(np.array, base)
  state = _fresh_state(ppo_updater, base)
  start = jax.device_get(state.trainable)
  state, (m1,) = _run(ppo_updater, state, [update_batch(ppo_updater, base, state)], base)
  # B = 0: the policy is the base model, so the k3 KL is exactly zero.
  assert m1["kl"] == 0.0 and m1["clip_fraction"] == 0.0
  after_one = jax.device_get(state.trainable)
  # With B = 0 the gradient reaches B only (dL/dA = x^T dy B^T s = 0); A moves next step.
  pairs = [(l, n) for l in start["lora"] for n in start["lora"][l]]
  assert all(np.any(after_one["lora"][l][n]["b"] != start["lora"][l][n]["b"]) for l, n in pairs)
  state, (m2,) = _run(ppo_updater, state, [update_batch(ppo_updater, base, state, seed=3)], base)
  final = jax.device_get(state.trainable)
  assert all(np.any(final["lora"][l][n]["a"] != start["lora"][l][n]["a"]) for l, n in pairs)
  assert m2["grad_norm"] > 0 and m2["kl"] > 0
  assert np.any(final["value_head"]["w"] != 0) and m1["value_loss"] > 0
  # The frozen base is bit-for-bit unchanged, and the optimizer holds moments
  # of the trainable leaves only (2 per leaf + counters), never of the base.
  chex.assert_trees_all_equal(jax.tree.map(np.array, base), base_before)
  trainable_size = sum(x.size for x in jax.tree.leaves(final))
  assert sum(x.size for x in jax.tree.leaves(state.opt_state)) <= 2 * trainable_size + 8
  assert int(state.step) == 2


def test_update_compiles_once_per_shape(tiny_backbone, ppo_updater):
  base = tiny_backbone.params
  state = _fresh_state(ppo_updater, base)
  for seed in range(3):     # max_traces=1: a retrace raises inside the update
    state, _ = _run(ppo_updater, state, [update_batch(ppo_updater, base, state, seed=seed)], base)
  assert ppo_updater.update.programs() == 1


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("processes, mesh, prompt_group",
                         [(1, "4x1", 1), (1, "2x2", 2), (2, "4x1", 2)])
def test_four_fake_devices_give_the_one_device_update(tiny_backbone, ppo_updater, tmp_path,
                                                      processes, mesh, prompt_group):
  """4 devices in one process, data parallel or ("data", "fsdp") 2x2 with the base split,
  or 2 devices in each of two processes (jax.distributed on loopback); with
  prompt_group 2 the sharded update runs each pair of equal prompts once, against
  the one-device update running every row's prompt."""
  base = tiny_backbone.params
  state = _fresh_state(ppo_updater, base)
  # Three minibatches, old log-probs from the initial adapter (later steps clip).
  batches = [update_batch(ppo_updater, base, state, seed=s) for s in range(3)]
  flat_base = flax.traverse_util.flatten_dict(jax.device_get(base), sep="/")
  np.savez(tmp_path / "batches.npz", **{f"{i}/{k}": v for i, b in enumerate(batches)
                                        for k, v in b.items()},
           **{f"base/{k}": v for k, v in flat_base.items()})
  state, metrics = _run(ppo_updater, state, batches, base)
  env = dict(os.environ, JAX_PLATFORMS="cpu", MESH=mesh, PROMPT_GROUP=str(prompt_group))
  args = [sys.executable, "-m", "tests.rl._sharded_check", str(tmp_path / "batches.npz"),
          lora.base_digest(base)]
  if processes == 2:
    port = _free_port()
    procs = [subprocess.Popen(args + [f"127.0.0.1:{port}", str(i)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
  else:
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)]
  outs = []
  for proc in procs:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    outs.append(json.loads(line[len("RESULT "):]))
  four = outs[0]
  assert all(o == four for o in outs)             # every process ends with the same state
  assert four["shards"] == 4
  assert (four["split_base_leaves"] > 0) == (mesh == "2x2")
  for key in ("loss", "kl", "clip_fraction", "grad_norm"):
    np.testing.assert_allclose(four[key], [float(m[key]) for m in metrics], rtol=1e-4,
                               atol=1e-6, err_msg=key)
  # Adam's first steps move each coordinate by ~lr whatever the gradient's size,
  # so float noise in a ~0 gradient shows at that scale.
  one = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.trainable))])
  np.testing.assert_allclose(four["params"], one, rtol=1e-4, atol=PPO.learning_rate * 0.2)
