"""End to end: the absl trainer on GeoQA, resume after a kill, and forks.

The resume test runs the tools-only variant (no LLM) so that three runs fit
in CI time; the smoke test runs the full system with SmolLM2.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).parents[2]
FAST = ["--config.loop.iterations=4", "--config.data.train=10", "--config.data.val=6",
        "--config.data.test=8"]


def _main(workdir, config="experiments/geoqa.py:smoke,tools", extra=(), timeout=900):
  return subprocess.run([sys.executable, "-m", "optimas_jax.main", f"--config={config}",
                         f"--workdir={workdir}", *extra], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


def _summary(workdir):
  return json.loads((pathlib.Path(workdir) / "summary.json").read_text())


def _records(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_geoqa_smoke_end_to_end_with_smollm2(tmp_path):
  proc = _main(tmp_path, config="experiments/geoqa.py:smoke", timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  s = _summary(tmp_path)
  assert s["iterations"] == 4 and 0.0 <= s["test"] <= 1.0
  recs = _records(tmp_path)
  assert recs[0]["event"] == "init"
  iters = [r for r in recs if r["event"] == "iteration"]
  assert [r["iteration"] for r in iters] == [0, 1, 2, 3]
  # All four variable types were visited (round robin) and every iteration logged its gate.
  assert {r["component"] for r in iters} == {"query_writer", "retriever", "evidence_selector",
                                              "answerer"}
  assert all("accepted" in r and "alignment" in r for r in iters)
  assert s["llm_usage"]["requests"] > 0 and s["counters"]["system_runs"] > 0
  assert (tmp_path / "final_config" / "config.json").exists()
  assert json.loads((tmp_path / "config.json").read_text())["task"] == "geoqa"


def _comparable(s):
  return {"test": s["test"], "val": s["val"], "config": s["config"],
          "history": [{k: h[k] for k in ("iteration", "component", "accepted", "val")}
                      for h in s["history"]]}


def test_kill_and_resume_ends_like_an_uninterrupted_run(tmp_path):
  full, killed = tmp_path / "full", tmp_path / "killed"
  proc = _main(full, extra=FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]

  cmd = [sys.executable, "-m", "optimas_jax.main", "--config=experiments/geoqa.py:smoke,tools",
         f"--workdir={killed}", *FAST]
  child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 900
  try:
    while time.time() < deadline:    # kill once iteration 1 is checkpointed
      ckpts = killed / "checkpoints"
      if ckpts.is_dir() and any(p.name == "2" for p in ckpts.iterdir()):
        break
      if child.poll() is not None:
        pytest.fail("run finished before it could be killed")
      time.sleep(0.5)
    os.kill(child.pid, signal.SIGKILL)
  finally:
    child.wait()
  assert not (killed / "summary.json").exists()
  proc = _main(killed, extra=FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from" in proc.stderr
  assert _comparable(_summary(killed)) == _comparable(_summary(full))


def test_init_from_forks_a_run_with_a_changed_config(tmp_path):
  base, fork = tmp_path / "base", tmp_path / "fork"
  assert _main(base, extra=[*FAST, "--config.loop.iterations=2"]).returncode == 0
  proc = _main(fork, extra=[*FAST, f"--config.init_from={base}/checkpoints/2",
                            "--config.loop.iterations=3", "--config.loop.min_gain=-1.0"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "forked from" in proc.stderr
  iters = [r for r in _records(fork) if r["event"] == "iteration"]
  assert [r["iteration"] for r in iters] == [2]       # continues where the base stopped
  assert _summary(fork)["iterations"] == 3
  assert _main(tmp_path / "bad", extra=[*FAST, "--config.init_from=/nonexistent"]).returncode != 0
