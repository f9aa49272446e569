"""End to end: the absl trainer on GeoQA with SmolLM2, a kill -9 and resume, forks,
and the comparison harness at equal budgets.

The resume test runs the full system (SmolLM2 writes queries at temperature
0.7), so it also checks that sampling, the rollout cache, the validation memo
and the LLM counters resume exactly; the fork and compare tests run the
tools-only variant (no LLM) to fit CI time.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from optimas_jax.loop.harness import SUMMARY_KEYS

ROOT = pathlib.Path(__file__).parents[2]
FAST = ["--config.loop.iterations=4", "--config.data.train=10", "--config.data.val=6",
        "--config.data.test=8"]
# Small enough for three runs in one test; still samples the writer at T=0.7.
LLM_FAST = ["--config.loop.iterations=2", "--config.data.train=6", "--config.data.val=3",
            "--config.data.test=3", "--config.collect.initial_examples=2",
            "--config.loop.examples_per_iteration=2", "--config.collect.num_candidates=2",
            "--config.optimizers.prompt_edit_proposals=1", "--config.optimizers.search_budget=2"]


def _main(workdir, config="experiments/geoqa.py:smoke,tools", extra=(), timeout=1800):
  return subprocess.run([sys.executable, "-m", "optimas_jax.main", f"--config={config}",
                         f"--workdir={workdir}", *extra], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


def _summary(workdir):
  return json.loads((pathlib.Path(workdir) / "summary.json").read_text())


def _records(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _comparable(s):
  return {"test": s["test"], "val": s["val"], "config": s["config"],
          "budget_runs": s["budget_runs"], "counters": s["counters"],
          "llm_usage": s["llm_usage"], "rollout_cache": s["detail"]["rollout_cache"],
          "history": s["history"]}


def _kill_after_checkpoint(workdir, config, extra, step: str):
  cmd = [sys.executable, "-m", "optimas_jax.main", f"--config={config}",
         f"--workdir={workdir}", *extra]
  child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 1800
  try:
    while time.time() < deadline:    # kill while the next iteration runs
      ckpts = pathlib.Path(workdir) / "checkpoints"
      if ckpts.is_dir() and any(p.name == step for p in ckpts.iterdir()):
        break
      if child.poll() is not None:
        pytest.fail("run finished before it could be killed")
      time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
  finally:
    child.wait()


def test_kill_and_resume_with_a_sampling_llm_ends_like_an_uninterrupted_run(tmp_path):
  full, killed = tmp_path / "full", tmp_path / "killed"
  config = "experiments/geoqa.py:smoke"
  proc = _main(full, config=config, extra=LLM_FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  s = _summary(full)
  recs = _records(full)
  assert recs[0]["event"] == "init"
  iters = [r for r in recs if r["event"] == "iteration"]
  assert [r["iteration"] for r in iters] == [0, 1]
  assert [r["component"] for r in iters] == ["query_writer", "retriever"]
  assert all("accepted" in r and "alignment" in r for r in iters)
  assert all("gate" in r for r in iters if r["changed"])
  assert s["llm_usage"]["requests"] > 0 and s["budget_runs"] == s["counters"]["system_runs"] + \
      s["counters"]["partial_runs"]
  assert s["test_runs"] == 3                       # the test set is outside the budget
  assert (full / "final_config" / "config.json").exists()
  # The LRF's text encoder reports what it cut and merged, per iteration and in the summary.
  assert all("lrf_text" in r for r in [recs[0], *iters])
  lrf_text = s["detail"]["lrf_text"]
  assert lrf_text["texts"] >= iters[-1]["lrf_text"]["texts"] > 0
  assert {"truncated_texts", "merged_candidates", "pairless_groups"} <= set(lrf_text)

  _kill_after_checkpoint(killed, config, LLM_FAST, step="1")
  assert not (killed / "summary.json").exists()
  proc = _main(killed, config=config, extra=LLM_FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from" in proc.stderr
  assert _comparable(_summary(killed)) == _comparable(s)
  # One log line per iteration, as in the uninterrupted run.
  assert [r["iteration"] for r in _records(killed) if r["event"] == "iteration"] == [0, 1]


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


def test_bad_config_fails_before_any_model_loads(tmp_path):
  start = time.time()
  proc = _main(tmp_path, extra=["--config.loop.gate=t-test"], timeout=300)
  assert proc.returncode != 0 and "config.loop.gate" in proc.stderr
  proc = _main(tmp_path, config="experiments/geoqa.py:smoke,tool", timeout=300)
  assert proc.returncode != 0 and "unknown config arg(s) ['tool']" in proc.stderr
  assert time.time() - start < 120


def test_compare_gives_every_method_the_same_budget(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "optimas_jax.compare", "--config=experiments/geoqa.py:smoke,tools",
       f"--workdir={tmp_path}", "--seeds=0", *FAST, "--config.loop.iterations=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = {m: json.loads((tmp_path / f"{m}-seed0" / "summary.json").read_text())
          for m in ("optimas", "optimas_static", "coordinate", "unoptimized")}
  assert all(tuple(r) == SUMMARY_KEYS for r in runs.values())   # one harness, one schema
  budget = runs["optimas"]["budget_runs"]
  for method in ("optimas_static", "coordinate"):
    assert runs[method]["budget_cap"] == budget
    assert abs(runs[method]["budget_runs"] - budget) <= 0.02 * budget, runs[method]["budget_runs"]
    assert runs[method]["iterations"] > 0
  # The static LRF never collects fresh pairs: it spends its budget on more iterations.
  static_iters = [r for r in _records(tmp_path / "optimas_static-seed0")
                  if r["event"] == "iteration"]
  assert all("collect" not in r for r in static_iters)
  assert "Budgets of the iterating methods differ by at most" in (tmp_path / "report.md").read_text()
  # The capped arms' cut iterations are on record (the budget setter's is 0 by construction).
  assert runs["optimas"]["cut_iteration_runs"] == 0
  assert all(runs[m]["cut_iteration_runs"] >= 0 for m in ("optimas_static", "coordinate"))


def test_a_fixed_budget_caps_every_arm_alike(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "optimas_jax.compare", "--config=experiments/geoqa.py:smoke,tools",
       f"--workdir={tmp_path}", "--seeds=0", *FAST, "--config.loop.iterations=2",
       "--methods=coordinate", "--budget_runs=40"],
      cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not (tmp_path / "optimas-seed0").exists()      # no arm is there to set the budget
  run = json.loads((tmp_path / "coordinate-seed0" / "summary.json").read_text())
  assert run["budget_cap"] == 40 and run["budget_runs"] == 40
  spent = [r for r in _records(tmp_path / "coordinate-seed0") if r["event"] == "budget_spent"]
  assert len(spent) == 1 and spent[0]["cut_iteration_runs"] == run["cut_iteration_runs"] > 0
