"""The sharded step on 4 fake CPU devices equals the 1-device step.

XLA_FLAGS must be set before JAX starts, so the check runs in a subprocess.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_four_device_step_equals_one_device_step():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "tests.lrf._sharded_check"],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  out = json.loads(line[len("RESULT "):])
  assert out["one"]["shards"] == 1 and out["four"]["shards"] == 4
  np.testing.assert_allclose(out["four"]["losses"], out["one"]["losses"],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["four"]["norms"], out["one"]["norms"],
                             rtol=1e-4, atol=1e-7)
  # Adam divides by sqrt(v): coordinates with ~0 gradient move by up to the
  # step's learning rate on float noise alone, so params compare at that scale.
  for a, b in zip(out["four"]["params"], out["one"]["params"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=out["one"]["lr"] * 0.2)
