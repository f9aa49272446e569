"""The sandbox against hostile programs: each ends as a counted failure within its limit,
and the host and the next run go on. Limits are short so the file takes seconds."""

import os
import pathlib
import shutil
import tempfile
import time

import pytest

from optimas_jax.sandbox import Limits, Sandbox, SandboxError
from optimas_jax.sandbox.executor import DEFAULT_HIDDEN

LIMITS = Limits(wall_s=8.0, cpu_s=2, memory_bytes=768 << 20, file_bytes=1 << 20,
                processes=16, output_bytes=256 << 10, kept_output_bytes=2048)


@pytest.fixture(scope="module")
def box():
  with Sandbox(LIMITS, workers=2) as sandbox:
    yield sandbox


def _processes_of(uids) -> list[int]:
  """Host pids whose real uid is one of `uids` (stray sandbox processes)."""
  found = []
  for entry in pathlib.Path("/proc").iterdir():
    if not entry.name.isdigit():
      continue
    try:
      status = (entry / "status").read_text()
    except OSError:
      continue
    uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
    if uid_line and int(uid_line.split()[1]) in uids:
      found.append(int(entry.name))
  return found


def visible_folder() -> pathlib.Path:
  """A fresh folder the program can see (not under a hidden path such as /tmp, which its view
  covers with an empty file system), wherever this checkout lives."""
  for base in ("/var/lib", "/opt", str(pathlib.Path(__file__).parent)):
    if any(base == h or base.startswith(h + "/") for h in DEFAULT_HIDDEN):
      continue
    try:
      return pathlib.Path(tempfile.mkdtemp(prefix="optimas-test-", dir=base))
    except OSError:
      continue
  pytest.skip("no folder outside the sandbox's hidden paths can be made here")


def _needs(box, *features):
  missing = [f for f in features if not box.isolation.get(f)]
  if missing:
    pytest.skip(f"this machine gives the sandbox no {missing} (see BUILD.md)")


def test_a_plain_program_passes_and_reports_its_isolation(box):
  result = box.run({"main.py": "import os\nprint('hello', os.getcwd())\n",
                    "data.txt": "x"})
  assert result.status == "passed" and result.output.startswith("hello ")
  if os.geteuid() == 0:   # the CI machines run as root: every layer is there
    assert {k for k, v in box.isolation.items() if v is True} >= {"net", "pid", "mount",
                                                                   "read_only"}
    uid = box.run({"main.py": "import os; print(os.getuid(), os.getgid(), os.getgroups())"})
    got_uid, got_gid, groups = uid.output.split(maxsplit=2)
    assert int(got_uid) in box.uids and int(got_gid) in box.uids and groups.strip() == "[]"


def test_infinite_loop_is_stopped_by_the_cpu_limit(box):
  start = time.monotonic()
  result = box.run({"main.py": "while True:\n  pass\n"}, limits=Limits(wall_s=8.0, cpu_s=1))
  assert result.status == "timeout" and result.reason == "cpu_time"
  assert time.monotonic() - start < 8.0


def test_a_sleeping_program_is_stopped_by_the_wall_clock(box):
  result = box.run({"main.py": "import time\ntime.sleep(60)\n"},
                   limits=Limits(wall_s=1.0))
  assert result.status == "timeout" and result.reason == "wall_time"
  assert result.wall_s < 5


FORK_LOOP = """
import os, sys, time
made, refused = 0, None
for _ in range(300):               # bounded: a broken sandbox cannot take the machine down
  try:
    pid = os.fork()
  except OSError as e:
    refused = e
    break
  if pid == 0:
    if ESCAPE:
      os.setsid()                  # leave the process group, as a daemon would
    time.sleep(30)
    os._exit(0)
  made += 1
print("made", made, "refused", refused, flush=True)
sys.exit(1 if refused else 0)
"""


@pytest.mark.parametrize("escape", [False, True])
def test_fork_loop_is_bounded_and_leaves_no_process(box, escape):
  _needs(box, "pid")
  result = box.run({"main.py": f"ESCAPE = {escape}\n" + FORK_LOOP},
                   limits=Limits(wall_s=8.0, processes=12))
  assert result.status == "failed", result.output
  made = int(result.output.split()[1])
  assert made < 12 and "Resource temporarily unavailable" in result.output
  deadline = time.monotonic() + 5            # the namespace is torn down with its PID 1
  while _processes_of(box.uids) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert _processes_of(box.uids) == []
  assert box.run({"main.py": "import os; os.fork() or os._exit(0); print('ok')"}).passed


def test_a_10gb_allocation_fails_with_memory_error(box):
  result = box.run({"main.py": "block = bytearray(10 * 1024 ** 3)\nprint(len(block))\n"})
  assert result.status == "failed" and result.reason == "memory"
  assert "MemoryError" in result.output


def test_writing_outside_its_folder_fails_and_leaves_the_host_untouched(box):
  _needs(box, "read_only")
  folder = visible_folder()
  try:
    folder.chmod(0o777)                       # even a world-writable folder is out of reach
    target = folder / "escaped.txt"
    result = box.run({"main.py": f"open({str(target)!r}, 'w').write('pwned')\n"})
    assert result.status == "failed" and "Read-only file system" in result.output
    assert not target.exists()
  finally:
    shutil.rmtree(folder)
  tmp = box.run({"main.py": "open('/tmp/optimas-sandbox-escape', 'w').write('x')\n"})
  assert tmp.status == "failed" and not pathlib.Path("/tmp/optimas-sandbox-escape").exists()
  own = box.run({"main.py": "import tempfile\nopen('mine.txt', 'w').write('x')\n"
                            "tempfile.TemporaryFile().write(b'y')\nprint('ok')\n"})
  assert own.passed, own.output


def test_a_file_over_the_size_limit_fails(box):
  result = box.run({"main.py": "open('big.bin', 'wb').write(b'x' * (4 << 20))\n"})
  assert result.status == "failed" and "File too large" in result.output


def test_socket_hook_blocks_sockets_without_a_network_namespace():
  with Sandbox(LIMITS, workers=1, network="hook") as hooked:
    assert hooked.isolation["net"] is False
    result = hooked.run({"main.py": "import socket\nsocket.socket()\n"})
    assert result.status == "failed" and "network access is blocked" in result.output


def test_printing_100mb_is_cut_and_killed(box):
  start = time.monotonic()
  result = box.run({"main.py": "import sys\nsys.stdout.write('x' * (100 << 20))\n"})
  assert result.status == "crashed" and result.reason == "output_limit"
  assert len(result.output) < 4 * LIMITS.kept_output_bytes and "bytes cut" in result.output
  assert time.monotonic() - start < LIMITS.wall_s


def test_a_signal_is_a_crash_and_every_run_is_counted(box):
  before = sum(box.stats().get(s, 0) for s in ("passed", "failed", "timeout", "crashed"))
  result = box.run({"main.py": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"})
  assert result.status == "crashed" and result.reason == "signal"
  assert result.signal == 11
  after = box.stats()
  assert sum(after.get(s, 0) for s in ("passed", "failed", "timeout", "crashed")) == before + 1
  assert after["reason/signal"] >= 1


def test_run_many_keeps_input_order_and_the_host_goes_on(box):
  programs = [{"main.py": f"import time\ntime.sleep({0.3 * (i % 2)})\nprint({i})\n"}
              for i in range(4)]
  programs.insert(2, {"main.py": "raise ValueError('boom')\n"})
  results = box.run_many(programs)
  assert [r.status for r in results] == ["passed", "passed", "failed", "passed", "passed"]
  assert [r.output.strip() for r in results if r.passed] == ["0", "1", "2", "3"]
  assert "ValueError: boom" in results[2].output


def test_bad_arguments_are_errors_not_results():
  with pytest.raises(ValueError, match="wall_s"):
    Limits(wall_s=0)
  with pytest.raises(ValueError, match="network"):
    Sandbox(network="off", probe=False)
  assert issubclass(SandboxError, RuntimeError)
