"""The LRF step on 2-D ("data", "fsdp") meshes of 4 and 8 fake CPU devices (1x4, 2x2,
4x1, 4x2) equals the 1-device step: the same losses, gradient norms and parameters.

XLA_FLAGS must be set before JAX starts, so the check runs in a subprocess.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("devices, shapes", [(4, ["4x1", "1x4", "2x2"]), (8, ["4x2"])])
def test_sharded_steps_equal_the_one_device_step(devices, shapes):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "tests.lrf._sharded_check", str(devices),
                         *shapes], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  out = json.loads(line[len("RESULT "):])
  one = out.pop("one")
  # One saved program per (mesh, step shape): nothing is shared across meshes.
  assert max(g["traced_files"] for g in out.values()) == one["traced_programs"] + sum(
      g["traced_programs"] for g in out.values())
  assert one["shards"] == 1
  for shape, got in out.items():
    data, fsdp = map(int, shape.split("x"))
    assert got["shards"] == data * fsdp, shape            # every device has its own rows
    # The steps ran the traced-once (exported) program, which keeps the state's split.
    assert got["split_after"] == got["split_leaves"] and got["traced_programs"] >= 1, shape
    assert (got["split_leaves"] > 0) == (fsdp > 1), shape  # parameters split over "fsdp"
    # ... so a device holds less of the parameters and optimizer state.
    # (tiny-bert's many small leaves stay whole: 78% of one device's at fsdp=2, 68% at 4)
    if fsdp > 1:
      assert got["state_bytes"] < 0.9 * one["state_bytes"], shape
    else:
      assert got["state_bytes"] == one["state_bytes"], shape
    np.testing.assert_allclose(got["losses"], one["losses"], rtol=1e-5, atol=1e-6,
                               err_msg=shape)
    np.testing.assert_allclose(got["norms"], one["norms"], rtol=1e-4, atol=1e-6,
                               err_msg=shape)
    # Adam divides by sqrt(v): coordinates with ~0 gradient move by up to the
    # step's learning rate on float noise alone, so params compare at that scale.
    for a, b in zip(got["params"], one["params"]):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=one["lr"] * 0.2, err_msg=shape)
