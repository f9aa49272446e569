"""The absl entry point runs the core demo end to end in a temp workdir."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def test_main_runs_core_demo_smoke(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "optimas_jax.main", "--config=experiments/core_demo.py:smoke",
       f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["counters"]["system_runs"] == 20 * len(summary["results"])
  assert all(0.0 <= r["f1"] <= 1.0 for r in summary["results"].values())
  assert (tmp_path / "best_config" / "config.json").exists()
  assert json.loads((tmp_path / "config.json").read_text())["job"] == "core_demo"


def test_main_rejects_unknown_job(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "optimas_jax.main", "--config=experiments/core_demo.py",
       "--config.job=nope", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "config.job='nope' is not a known job" in proc.stderr
