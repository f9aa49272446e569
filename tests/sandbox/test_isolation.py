"""What a program cannot reach, checked from outside with things the test itself holds: a
listener on loopback, a secret in the real environment of the sandbox's parent, another
sandbox's uids and limits, the machine's memory and disk, and an unprivileged parent."""

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from optimas_jax.sandbox import Limits, Sandbox, SandboxError

LIMITS = Limits(wall_s=20.0, cpu_s=10, memory_bytes=1 << 30, processes=40,
                output_bytes=256 << 10, kept_output_bytes=4096)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the CI machines are)")


@pytest.fixture(scope="module")
def box():
  with Sandbox(LIMITS, workers=2) as sandbox:
    yield sandbox


def test_a_listener_on_loopback_is_out_of_reach(box):
  listener = socket.create_server(("127.0.0.1", 0))
  listener.settimeout(0.5)
  port = listener.getsockname()[1]
  try:
    result = box.run({"main.py": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), "
                                 "timeout=2).sendall(b'hello')\nprint('connected')\n"})
    assert result.status == "failed" and "connected" not in result.output, result.output
    with pytest.raises(socket.timeout):      # nothing ever knocked
      listener.accept()
  finally:
    listener.close()


SCAN = textwrap.dedent("""
    import os
    # The secret arrives masked (secret XOR mask), so no file the program holds contains it.
    mask, masked = (bytes.fromhex(open(name).read()) for name in ('mask', 'masked'))
    needle = bytes(a ^ b for a, b in zip(mask, masked))
    hits, read = [], 0
    def scan(path):
      global read
      try:
        with open(path, 'rb') as f:
          data = f.read(1 << 20)
      except OSError:
        return
      read += 1
      if needle in data:
        hits.append(path)
    for pid in os.listdir('/proc'):
      if pid.isdigit() or pid in ('self', 'thread-self'):
        for name in ('environ', 'cmdline', 'status', 'maps', 'mountinfo'):
          scan(f'/proc/{pid}/{name}')
    for top in ('/proc/self/cwd', '/tmp', '/var/tmp', '/dev/shm', '/run', '/root', '/home', '/etc'):
      for folder, _, files in os.walk(top):
        for name in files:
          scan(os.path.join(folder, name))
    print('read', read, 'hits', hits)
""")

PARENT = textwrap.dedent("""
    import json, os, sys
    from optimas_jax.sandbox import Limits, Sandbox
    secret = os.environ["OPTIMAS_TEST_SECRET"].encode()
    mask = os.urandom(len(secret))
    masked = bytes(a ^ b for a, b in zip(secret, mask))
    with Sandbox(Limits(wall_s=60, cpu_s=30), workers=1) as box:
      r = box.run({"main.py": sys.argv[1], "mask": mask.hex(), "masked": masked.hex()})
    print(json.dumps({"output": r.output, "status": r.status}))
""")


def test_no_file_the_program_can_read_holds_its_parents_secret():
  secret = "sk-optimas-" + os.urandom(8).hex()
  env = {**os.environ, "OPTIMAS_TEST_SECRET": secret, "OPENAI_API_KEY": secret}
  out = subprocess.run([sys.executable, "-c", PARENT, SCAN], env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got["status"] == "passed", got
  read = int(got["output"].split()[1])
  assert read > 5, got                         # it did read files (its own /proc at least)
  assert "hits []" in got["output"], got       # and the secret was in none of them
  assert secret not in got["output"]


@ROOT_ONLY
def test_two_sandboxes_never_share_a_uid_in_one_process_or_two(box):
  with Sandbox(LIMITS, workers=2) as other:
    assert not set(box.uids) & set(other.uids)
    program = ("from optimas_jax.sandbox import Sandbox\n"
               "with Sandbox(workers=2, probe=False) as b:\n  print(list(b.uids))\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=60)
    theirs = json.loads(out.stdout.strip())
    assert len(theirs) == 4 and not set(theirs) & (set(box.uids) | set(other.uids))
    runs = [box.run({"main.py": "import os; print(os.getuid())"}),
            other.run({"main.py": "import os; print(os.getuid())"})]
    assert int(runs[0].output) in box.uids and int(runs[1].output) in other.uids


FORK_AND_ALLOCATE = textwrap.dedent("""
    import os, time
    kids = []
    for i in range(32):
      pid = os.fork()
      if pid == 0:
        block = bytearray(512 << 20)
        for j in range(0, len(block), 4096):
          block[j] = 1
        time.sleep(5)
        os._exit(0)
      kids.append(pid)
    bad = sum(os.waitpid(pid, 0)[1] != 0 for pid in kids)
    print("bad", bad)
    raise SystemExit(1 if bad else 0)
""")


def test_32_processes_of_512mb_each_meet_one_memory_ceiling(box):
  if not box.isolation.get("cgroup"):
    pytest.skip("no control group on this machine: memory is bounded per process only")
  result = box.run({"main.py": FORK_AND_ALLOCATE})
  assert result.status in ("crashed", "failed"), result
  assert result.reason == "memory", result
  assert box.run({"main.py": "print('next')"}).passed       # the host and the next run go on


@pytest.mark.parametrize("program", [
    "for i in range(20000):\n  open(f'f{i}', 'w').write('x')\n",
    "for i in range(100):\n  open(f'f{i}', 'wb').write(b'x' * (10 << 20))\n",
], ids=["20000_small_files", "1gb_across_files"])
def test_filling_the_disk_is_a_counted_failure(box, program):
  if not box.isolation.get("disk"):
    pytest.skip("no private work folder on this machine")
  result = box.run({"main.py": program})
  assert result.status == "failed" and "No space left on device" in result.output, result


AS_NOBODY = textwrap.dedent("""
    set -e
    mkdir -p /tmp/optimas-pyenv-bind-$$
    mount --make-rprivate /
    for dir in "$@"; do :; done
    if [ -d /root/.pyenv ]; then
      mount --bind /root/.pyenv /tmp/optimas-pyenv-bind-$$
      mount -t tmpfs -o mode=755 tmpfs /root
      mkdir /root/.pyenv
      mount --move /tmp/optimas-pyenv-bind-$$ /root/.pyenv
    fi
    exec setpriv --reuid=65534 --regid=65534 --clear-groups "$PYTHON" -c "$PROGRAM"
""")

UNPRIVILEGED = textwrap.dedent("""
    import json, os
    from optimas_jax.sandbox import Limits, Sandbox, SandboxError
    assert os.getuid() == 65534
    out = {}
    with Sandbox(Limits(wall_s=20), workers=1) as box:
      out["isolation"] = {k: v for k, v in box.isolation.items() if isinstance(v, bool)}
      r = box.run({"main.py": "import os; print(os.listdir('/tmp'), "
                              "open('/proc/self/status').read().split('CapEff:')[1].split()[0])"})
      out["run"] = [r.status, r.output]
    try:
      Sandbox(workers=1, require=("cgroup",))
    except SandboxError as e:
      out["refused"] = str(e)
    print(json.dumps(out))
""")


@ROOT_ONLY
def _closed_to_others(path: pathlib.Path):
  """The first folder from / down to `path` that other users cannot enter, or None."""
  for folder in [*reversed(path.resolve().parents), path.resolve()]:
    if not folder.stat().st_mode & stat.S_IXOTH:
      return folder
  return None


def test_an_unprivileged_user_gets_namespaces_or_a_clear_refusal():
  if not shutil.which("setpriv") or not shutil.which("unshare"):
    pytest.skip("util-linux setpriv/unshare are missing")
  # The unprivileged user must reach the checkout and its venv (a `mktemp -d` clone is
  # 0700): say so instead of failing on an import the sandbox never got to run.
  for needed in (pathlib.Path(__file__).parents[2], pathlib.Path(sys.prefix)):
    closed = _closed_to_others(needed)
    if closed is not None:
      pytest.skip(f"{closed} (mode {oct(closed.stat().st_mode & 0o777)}) is closed to other "
                  f"users, so the unprivileged user cannot import from {needed}; clone into "
                  "a folder others may enter to run this test")
  env = {**os.environ, "PYTHON": sys.executable, "PROGRAM": UNPRIVILEGED}
  out = subprocess.run(["unshare", "-m", "sh", "-c", AS_NOBODY], env=env, cwd="/",
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got["isolation"]["user"] and got["isolation"]["uid_drop"] is False
  assert all(got["isolation"][k] for k in ("net", "mount", "pid", "hidden", "disk")), got
  status, output = got["run"]
  assert status == "passed" and output.split()[-1] == "0000000000000000", got   # no capability
  assert "allow_weak_isolation" in got["refused"] and "cgroup" in got["refused"]


def test_a_namespace_that_cannot_be_used_falls_back_to_none_and_says_so(monkeypatch):
  """Not root, a namespace the kernel lets us make but not use (mounts refused inside a
  container): the first probe's setup fails; the sandbox runs without namespaces, records
  why, and a caller that requires the layers is refused with the fix."""
  import optimas_jax.sandbox.executor as executor
  real_run = executor.Sandbox._run
  seen = []

  def refused_mounts(self, files, main, limits, uid, *args, **kwargs):
    seen.append(self._namespaces)
    if self._namespaces:              # what the launcher reports when a mount is refused
      return executor.Result("crashed", "setup", "optimas-sandbox: setup failed: OSError: "
                             "[Errno 1] mount /tmp: Operation not permitted", 80)
    return real_run(self, files, main, limits, uid, *args, **kwargs)

  monkeypatch.setattr(executor.Sandbox, "_run", refused_mounts)
  monkeypatch.setattr(executor.os, "geteuid", lambda: 1000)      # as a user, not root
  with Sandbox(Limits(wall_s=20), workers=1) as box:
    assert seen == [True, False]                                 # probed, then fell back
    assert "mount /tmp: Operation not permitted" in box.isolation["namespace_setup_error"]
    assert not any(box.isolation.get(k) for k in ("net", "mount", "pid", "hidden", "disk"))
    assert box.run({"main.py": "print('ran')"}).output.strip() == "ran"
  with pytest.raises(SandboxError, match=r"\['net', 'mount'\].*allow_weak_isolation"):
    Sandbox(Limits(wall_s=20), workers=1, require=("net", "mount"))
