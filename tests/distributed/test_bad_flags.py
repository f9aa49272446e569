"""Bad multi-process flags stop in seconds with the flag's name, never hang."""

import subprocess
import sys
import time

import pytest

from tests.distributed.test_two_processes import ROOT, _port

CONFIG = "--config=experiments/lrf_amazon.py:smoke"


def _main(*flags, timeout=60):
  start = time.time()
  proc = subprocess.run([sys.executable, "-m", "optimas_jax.main", CONFIG,
                         "--workdir=/tmp/optimas_bad_flags", *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)
  return proc, time.time() - start


@pytest.mark.parametrize("flags, message", [
    (["--num_processes=2", "--process_id=2", "--coordinator_address=127.0.0.1:1"],
     "--process_id=2 --num_processes=2"),
    (["--num_processes=2", "--process_id=1"], "needs --coordinator_address"),
    (["--num_processes=2", "--process_id=1", "--coordinator_address=localhost"],
     "--coordinator_address='localhost': give host:port"),
    (["--config.lrf.fsdp=3"], "use a divisor of the 1 devices"),   # a mesh that cannot be
])
def test_inconsistent_flags_are_refused(flags, message):
  proc, seconds = _main(*flags)
  assert proc.returncode != 0 and message in proc.stderr and seconds < 30


def test_unreachable_coordinator_names_the_flag_within_the_timeout():
  proc, seconds = _main("--num_processes=2", "--process_id=1", "--distributed_timeout_s=3",
                        f"--coordinator_address=127.0.0.1:{_port()}")
  assert proc.returncode != 0
  assert "did not answer within 3 s (--distributed_timeout_s)" in proc.stderr
  assert seconds < 30


def test_a_missing_process_aborts_at_the_deadline_with_the_flags_named():
  proc, seconds = _main("--num_processes=2", "--process_id=0", "--distributed_timeout_s=3",
                        f"--coordinator_address=127.0.0.1:{_port()}")
  assert proc.returncode != 0 and seconds < 40
  assert "all 2 processes must join with the same --num_processes" in proc.stderr
  assert "DEADLINE_EXCEEDED" in proc.stderr
