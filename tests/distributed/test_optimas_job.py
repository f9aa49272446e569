"""The Optimas job (GeoQA, tools-only system) run by two JAX processes on loopback, and
with its system runs on a local Ray cluster, ends where one process with the local runner
ends: the same kept changes, scores and system-run counts."""

import json
import os
import subprocess
import sys

import pytest

from tests.distributed.test_two_processes import ROOT, _port

ARGS = ["--config=experiments/geoqa.py:smoke,tools", "--config.loop.iterations=1",
        "--config.data.train=8", "--config.data.val=6", "--config.data.test=6"]


def _env(devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "JAX_PLATFORMS": "cpu"}


def _run(workdir, processes: int = 1, extra=()):
  cmd = [sys.executable, "-m", "optimas_jax.main", *ARGS, f"--workdir={workdir}", *extra]
  if processes == 1:
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=_env(2), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)]
  else:
    port = _port()
    procs = [subprocess.Popen(cmd + [f"--coordinator_address=127.0.0.1:{port}",
                                     f"--num_processes={processes}", f"--process_id={i}"],
                              cwd=ROOT, env=_env(2 // processes), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(processes)]
  logs = []
  for p in procs:
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    logs.append(err)
  summary = json.loads((workdir / "summary.json").read_text())
  return {k: summary[k] for k in ("test", "val", "config", "budget_runs", "history")}, summary, logs


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  return _run(tmp_path_factory.mktemp("one"))


def test_two_processes_split_the_system_runs(one_process, tmp_path):
  reference = one_process[0]
  assert len(reference["history"]) == 1 and reference["budget_runs"] > 50   # a real iteration
  got, summary, logs = _run(tmp_path, processes=2)
  assert all("ProcessRunner(a block per process, 2 processes)" in log for log in logs)
  assert got == one_process[0]
  assert summary["counters"]["system_runs"] == one_process[1]["counters"]["system_runs"]


def test_ray_actors_run_the_system(one_process, tmp_path):
  pytest.importorskip("ray", reason="the `ray` extra is not installed")
  got, summary, logs = _run(tmp_path, extra=["--config.execution.backend=ray",
                                             "--config.execution.ray_actors=2"])
  assert "RayRunner(2 Ray actors)" in logs[0]
  # Each actor's process applies the entry points' settings (runtime.configure_process).
  assert "Ray actors: ['host memory: reuse', 'host memory: reuse']" in logs[0]
  assert got == one_process[0]
  for name, row in one_process[1]["counters"]["components"].items():
    assert summary["counters"]["components"][name]["calls"] == row["calls"]
