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
  proc = subprocess.run([sys.executable, "experiments/benchmarks/device.py", "--scale=tiny",
                         "--sections=lrf_step,rl_step,rl_update,consistency", f"--out={out}"], cwd=ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  for section in ("lrf_step", "rl_step", "rl_update", "consistency"):
    assert "error" not in result[section], result[section]
    assert len(result[section + "_loadavg_after"]) == 3      # the host's load, recorded
  assert result["cpu_count"] == os.cpu_count() and len(result["loadavg_start"]) == 3
  lrf = result["lrf_step"]
  assert lrf["rows"] == 8 and lrf["tokens_per_s"] > 0 and 0 < lrf["mfu"] < 1
  assert lrf["model_flops"] > 6 * lrf["matmul_params"] * 8 * 32 and "6 N" in lrf["mfu_formula"]
  assert "LRF training: per-device estimate" in lrf["memory"]
  rl = result["rl_step"]
  assert rl["rows"] == 4 and 0 < rl["sample_seconds"] + rl["update_seconds"] <= rl["seconds"]
  assert "RL step: per-device estimate" in rl["memory"]
  assert result["rl_update"]["tokens_per_s"] > 0 and result["rl_update"]["params"] > 0
  assert "RL update: per-device estimate" in result["rl_update"]["memory"]
  # bfloat16 noise at tiny shapes; the sampler follows the update's form (see BUILD.md).
  assert result["consistency"]["sampler_vs_update_max_abs"] < 0.05
