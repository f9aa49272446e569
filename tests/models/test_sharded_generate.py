"""Decoding on ("data", "fsdp") meshes of fake CPU devices (1x4, 2x2, 4x1, 4x2) gives the
one-device tokens, greedy and sampled (per-row keys), with the weights split over "fsdp";
the RL trainer samples from the updater's copy of the base (no second copy).

XLA_FLAGS must be set before JAX starts, so the check runs in a subprocess.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_sharded_decoding_equals_one_device():
  proc = subprocess.run([sys.executable, "-m", "tests.models._sharded_generate_check", "8",
                         "4x1", "1x4", "2x2", "4x2"], cwd=ROOT,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
  one, trainer = out.pop("one"), out.pop("trainer")
  assert len(set(map(tuple, one["sampled"]))) > 1          # sampling is not degenerate
  for shape, got in out.items():
    fsdp = int(shape.split("x")[1])
    assert got["greedy"] == one["greedy"], shape
    assert got["sampled"] == one["sampled"], shape
    np.testing.assert_allclose(np.concatenate(got["logprobs"]),
                               np.concatenate(one["logprobs"]), atol=1e-4, err_msg=shape)
    assert (got["split_leaves"] > 0) == (fsdp > 1), shape
    if fsdp > 1:
      # (tiny-llama's small leaves stay whole: 77% of one device's at fsdp=2)
      assert got["param_bytes"] < 0.8 * one["param_bytes"], shape
  assert trainer == {"shares_base": True, "generator_mesh": True}
