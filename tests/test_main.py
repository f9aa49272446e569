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
  assert "config.job='nope' is not known; choose one of" in proc.stderr


def test_main_runs_the_lrf_job_and_resumes(tmp_path):
  cmd = [sys.executable, "-m", "optimas_jax.main", "--config=experiments/lrf_amazon.py:smoke",
         f"--workdir={tmp_path}"]
  first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-2000:]
  done = json.loads((tmp_path / "summary.json").read_text())
  assert done["step"] == done["total_steps"] > 0 and done["eval"]
  # Same command with one more epoch continues from the checkpoint.
  again = subprocess.run(cmd + ["--config.lrf.epochs=3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "resumed at step" in again.stderr
  assert json.loads((tmp_path / "summary.json").read_text())["step"] > done["step"]
