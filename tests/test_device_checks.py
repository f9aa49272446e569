"""The prepared device checks run end to end at tiny shapes on CPU, so the script a lent
GPU gets is known to work (its numbers there are the point; here only that it runs)."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def test_device_checks_run_at_tiny_shapes(tmp_path):
  out = tmp_path / "device.json"
  proc = subprocess.run([sys.executable, "experiments/device/checks.py", "--scale=tiny",
                         "--sections=rl_update,consistency", f"--out={out}"], cwd=ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert "error" not in result["rl_update"] and "error" not in result["consistency"], result
  assert result["rl_update"]["tokens_per_s"] > 0 and result["rl_update"]["params"] > 0
  assert "RL update: per-device estimate" in result["rl_update"]["memory"]
  # bfloat16 noise at tiny shapes; the sampler follows the update's form (see BUILD.md).
  assert result["consistency"]["sampler_vs_update_max_abs"] < 0.05
