"""System runs and Monte-Carlo rollouts split across two JAX processes on loopback
(gloo): every process gets every record, equal to one process's run."""

import json
import os
import pathlib
import subprocess
import sys

from tests.distributed.test_two_processes import ROOT, _port
from tests.system import runner_system
from tests.system.test_runners import _assert_same


def test_two_processes_split_runs_and_rollouts(tmp_path):
  port, out = _port(), tmp_path / "record"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  procs = [subprocess.Popen([sys.executable, str(ROOT / "tests/distributed/_runner_check.py"),
                             f"127.0.0.1:{port}", "2", str(i), str(out)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  local = runner_system.records(runner_system.build())
  got = [json.loads(pathlib.Path(f"{out}.{i}").read_text()) for i in range(2)]
  # Each process drafted only its own block of the 7 examples.
  assert sorted(got[0]["own_drafts"]) == ["alpha", "bad", "beta", "gamma"]
  assert sorted(got[1]["own_drafts"]) == ["delta", "epsilon", "zeta"]
  for record in got:
    # JSON turns tuples into lists; compare through the same round trip.
    _assert_same(record["run"], json.loads(json.dumps(local["run"])))
    _assert_same(record["rollouts"], json.loads(json.dumps(local["rollouts"])))
    _assert_same(record["scores"], local["scores"])
    assert record["counters"]["system_runs"] == 7 and record["counters"]["partial_runs"] == 12
    for name, row in local["counters"]["components"].items():
      assert record["counters"]["components"][name]["calls"] == row["calls"]
      assert record["counters"]["components"][name]["failures"] == row["failures"]
