"""Two CPU processes on loopback (jax.distributed, gloo collectives) train the LRF as one
process does: the same losses at every step, to float tolerance; killed mid-run, the two
resume from the last Orbax checkpoint and end where an uninterrupted run ends."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = "--config=experiments/lrf_amazon.py:smoke"
TIMEOUT = 600


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "JAX_PLATFORMS": "cpu"}


def _start(workdir, processes: int) -> list[subprocess.Popen]:
  """`processes` processes of one run, 4 devices in all."""
  base = [sys.executable, "-m", "optimas_jax.main", CONFIG, f"--workdir={workdir}"]
  if processes == 1:
    return [subprocess.Popen(base, cwd=ROOT, env=_env(4), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)]
  port = _port()
  return [subprocess.Popen(base + [f"--coordinator_address=127.0.0.1:{port}",
                                   f"--num_processes={processes}", f"--process_id={i}"],
                           cwd=ROOT, env=_env(4 // processes), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
          for i in range(processes)]


def _wait(procs) -> None:
  for p in procs:
    _, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 0, err[-3000:]


def _losses(workdir) -> dict[int, float]:
  """The last logged train loss of every step (a resumed run logs some steps twice)."""
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["split"] == "train"}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one")
  _wait(_start(workdir, 1))
  return workdir


def test_two_processes_train_as_one(one_process, tmp_path):
  _wait(_start(tmp_path, 2))
  one, two = _losses(one_process), _losses(tmp_path)
  assert sorted(one) == sorted(two) and len(one) >= 4
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)],
                             rtol=1e-5, atol=1e-6)
  summary = json.loads((tmp_path / "summary.json").read_text())
  reference = json.loads((one_process / "summary.json").read_text())
  assert summary["step"] == reference["step"]
  for name, values in reference["eval"].items():
    np.testing.assert_allclose(summary["eval"][name], values, rtol=1e-5, atol=1e-6)
  # Process 0 alone wrote the records: one line per step, one summary.
  steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if json.loads(l)["split"] == "train"]
  assert steps == sorted(set(steps))


def test_two_processes_killed_mid_run_resume_to_the_same_end(one_process, tmp_path):
  procs = _start(tmp_path, 2)
  checkpoints = tmp_path / "checkpoints"
  deadline = time.time() + TIMEOUT
  while time.time() < deadline and not (checkpoints / "2").is_dir():
    assert all(p.poll() is None for p in procs), "a process ended before its checkpoint"
    time.sleep(0.2)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.communicate()
  reference = _losses(one_process)
  assert len(_losses(tmp_path)) < len(reference)            # it was stopped part-way
  _wait(_start(tmp_path, 2))
  resumed = _losses(tmp_path)
  assert sorted(resumed) == sorted(reference)
  np.testing.assert_allclose([resumed[s] for s in sorted(resumed)],
                             [reference[s] for s in sorted(reference)], rtol=1e-5, atol=1e-6)
