"""The child side of the sandbox: run as a script, stdlib only (never imported by the host).

  python -s -P -B launcher.py '<spec json>'

Three processes, so that the program's whole tree can be killed and reaped:

  launcher (the host's child, its own session)
    joins the program's control group (when the host made one), unshares a
    user namespace when not root, then the network, mount and PID
    namespaces (each where the machine allows it); in the mount namespace it
    covers the hidden paths (benchmark data, the project, home and temporary
    folders) with empty file systems, gives the program a fresh size-capped
    tmpfs as its work folder and makes every other mount read-only, then
    forks
  supervisor (PID 1 of the new PID namespace)
    mounts a fresh /proc, forks the program and reaps every process until
    the program exits; its exit tears the namespace down (the kernel kills
    every process left in it), then it reports on the status pipe
  program
    sets the resource limits, drops to the unprivileged uid (when root) or
    drops every capability (in a user namespace), sets no_new_privs,
    blocks sockets by an audit hook when there is no network namespace,
    and runs the program file.

Any failure before the program starts exits with SETUP_FAILED and a line on
stderr; the program never runs with less isolation than was reported.
"""

import ctypes
import json
import os
import resource
import runpy
import signal
import stat
import sys
import traceback

SETUP_FAILED = 125

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522
_KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
               "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
               "strictatime": MS_STRICTATIME}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]


def _check(ret: int, what: str) -> None:
  if ret != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _encode(text):
  return None if text is None else text.encode()


def _mount(source, target, fstype, flags, data=None) -> None:
  _check(_libc.mount(_encode(source), _encode(target), _encode(fstype), flags, _encode(data)),
         f"mount {target}")


def _unshare(flags: int) -> bool:
  return _libc.unshare(flags) == 0


def _die_with_parent() -> None:
  _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _mount_points() -> list[tuple[str, set]]:
  out = []
  with open("/proc/self/mountinfo") as f:
    for line in f:
      parts = line.split()
      point = parts[4].encode().decode("unicode_escape")   # "\040" is a space
      out.append((point, set(parts[5].split(","))))
  return out


def _traversable(path: str) -> bool:
  return bool(os.stat(path).st_mode & stat.S_IXOTH)


def _expose(paths) -> None:
  """Makes `paths` reachable by an unprivileged uid (e.g. a Python under /root, mode 0700):
  a blocking folder is covered by an empty tmpfs that holds bind mounts of what is needed."""
  for _ in range(8):                     # nested blocking folders: one level per round
    cover: dict[str, set] = {}
    for p in paths:
      parts = os.path.realpath(p).strip("/").split("/")
      for i in range(1, len(parts)):
        parent = "/" + "/".join(parts[:i])
        if not _traversable(parent):
          cover.setdefault(parent, set()).add(parts[i])
          break
    if not cover:
      return
    for parent, children in cover.items():
      fds = {c: os.open(os.path.join(parent, c), os.O_PATH) for c in children}
      _mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
      for c, fd in fds.items():
        target = os.path.join(parent, c)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
          os.mkdir(target)
        else:
          open(target, "w").close()
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        os.close(fd)
  raise OSError("could not expose " + ", ".join(paths))


def _read_only_except(workdir: str) -> list[str]:
  """Every mount read-only except the work folder's own tmpfs; returns failures."""
  failed = []
  for point, options in _mount_points():
    if point == workdir:
      continue
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for name, bit in _KEPT_FLAGS.items():
      if name in options:
        flags |= bit
    try:
      _mount(None, point, None, flags)
    except OSError as e:
      failed.append(f"{point} ({e.strerror})")
  return failed


def _under(path: str, folder: str) -> bool:
  return path == folder or path.startswith(folder.rstrip("/") + "/")


def _mask(hidden, keep) -> list[str]:
  """Covers each hidden path with an empty tmpfs, then binds back the kept paths under it
  (the Python install may live under a hidden home folder). Returns what was covered."""
  hidden = sorted({os.path.realpath(h) for h in hidden if os.path.exists(h)}, key=len)
  keep = sorted({os.path.realpath(k) for k in keep if os.path.exists(k)})
  fds = {k: os.open(k, os.O_PATH) for k in keep if any(_under(k, h) for h in hidden)}
  covered = []
  for h in hidden:
    if os.path.isfile(h):
      _mount("/dev/null", h, None, MS_BIND)
      covered.append(h)
    if not os.path.isdir(h):             # a file, or gone under an outer cover
      continue
    _mount("tmpfs", h, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    covered.append(h)
    for k, fd in fds.items():
      if _under(k, h) and k != h:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
          os.makedirs(k, exist_ok=True)
        else:
          os.makedirs(os.path.dirname(k), exist_ok=True)
          open(k, "w").close()
        _mount(f"/proc/self/fd/{fd}", k, None, MS_BIND | MS_REC)
  for fd in fds.values():
    os.close(fd)
  return covered


def _read_files(workdir: str) -> dict:
  files = {}
  for name in os.listdir(workdir):
    with open(os.path.join(workdir, name), "rb") as f:
      files[name] = f.read()
  return files


def _private_workdir(spec: dict, files: dict) -> None:
  """A fresh tmpfs of `disk_bytes` and `disk_files` at the work folder, with its files."""
  workdir, lim, uid = spec["workdir"], spec["limits"], spec["uid"]
  os.makedirs(workdir, exist_ok=True)
  options = f"size={lim['disk_bytes']},nr_inodes={lim['disk_files']},mode=0700"
  if uid is not None:
    options += f",uid={uid},gid={spec['gid']}"
  _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, options)
  for name, data in files.items():
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
      f.write(data)
    os.chmod(path, 0o644)
    if uid is not None:
      os.chown(path, uid, spec["gid"])


def _enter_user_namespace() -> bool:
  """Not root: a user namespace where this uid is 0, so the other namespaces can be made."""
  uid, gid = os.getuid(), os.getgid()
  if not _unshare(CLONE_NEWUSER):
    return False
  for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                     ("/proc/self/gid_map", f"0 {gid} 1")):
    with open(path, "w") as f:
      f.write(text)
  return True


def _isolate(spec: dict) -> dict:
  """Unshares what the spec asks and the machine allows; returns what was achieved."""
  want = spec["isolate"]
  flags = {"net": CLONE_NEWNET, "mount": CLONE_NEWNS, "pid": CLONE_NEWPID}
  got = {k: False for k in flags}
  got["user"] = bool(want.get("user")) and _enter_user_namespace()
  asked = [k for k in flags if want.get(k) and (os.geteuid() == 0)]
  if asked and _unshare(sum(flags[k] for k in asked)):
    got.update({k: True for k in asked})
  else:
    for k in asked:
      got[k] = _unshare(flags[k])
  got["read_only"] = got["hidden"] = got["disk"] = False
  if got["mount"]:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    files = _read_files(spec["workdir"])            # before /tmp is covered
    got["hidden_paths"] = _mask(spec["hide"], spec["expose"])
    got["hidden"] = True
    if spec["uid"] is not None:
      _expose(spec["expose"])
    _private_workdir(spec, files)
    got["disk"] = True
    failed = _read_only_except(spec["workdir"])
    got["read_only"] = not any(f.split(" (")[0] == "/" for f in failed)
    got["read_only_failed"] = failed
  return got


def _drop_capabilities() -> None:
  """In a user namespace the program is uid 0 there: take every capability away."""
  for cap in range(64):
    _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)          # past the last cap: EINVAL, ignored
  _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

  class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

  class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]

  _check(_libc.capset(ctypes.byref(Header(_CAP_VERSION_3, 0)), (Data * 2)()), "capset")
  with open("/proc/self/status") as f:
    eff = next(line for line in f if line.startswith("CapEff:")).split()[1]
  if int(eff, 16):
    raise OSError(f"capabilities still held after capset: {eff}")


def _block_sockets(event, args) -> None:
  if event.startswith("socket."):
    raise PermissionError(f"sandbox: network access is blocked ({event})")


def _run_program(spec: dict, isolation: dict, ready_fd: int) -> None:
  """In the program process: limits, uid drop, then the program. Never returns."""
  try:
    lim = spec["limits"]
    cpu = max(1, int(lim["cpu_s"]))
    nproc = lim["processes"] + spec["nproc_base"]   # not root: NPROC counts the user's others
    for which, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                         (resource.RLIMIT_AS, (lim["memory_bytes"],) * 2),
                         (resource.RLIMIT_FSIZE, (lim["file_bytes"],) * 2),
                         (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
                         (resource.RLIMIT_NPROC, (nproc, nproc)),
                         (resource.RLIMIT_CORE, (0, 0))):
      hard = resource.getrlimit(which)[1]      # not root: a limit cannot rise above its hard one
      if hard != resource.RLIM_INFINITY:
        value = tuple(min(v, hard) for v in value)
      resource.setrlimit(which, value)
    uid, gid = spec["uid"], spec["gid"]
    if uid is not None:
      os.setgroups([])
      os.setgid(gid)
      os.setuid(uid)
      if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
        raise OSError(f"uid drop did not hold: uid {os.getuid()}, euid {os.geteuid()}")
      try:
        os.setuid(0)
      except PermissionError:
        pass
      else:
        raise OSError("uid drop is reversible")
    elif isolation.get("user"):
      _drop_capabilities()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.chdir(spec["workdir"])            # the bind mount, not the folder under it
    if spec["socket_hook"] == "on" or (spec["socket_hook"] == "auto" and not isolation["net"]):
      sys.addaudithook(_block_sockets)
    os.write(ready_fd, b"1")
    os.close(ready_fd)
  except BaseException as e:  # report any setup failure, run nothing
    sys.stderr.write(f"optimas-sandbox: setup failed: {type(e).__name__}: {e}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)
  main = os.path.join(spec["workdir"], spec["main"])
  sys.argv = [main]
  sys.path.insert(0, spec["workdir"])
  try:
    runpy.run_path(main, run_name="__main__")
  except SystemExit:
    raise
  except BaseException:  # the program's error: a traceback and exit 1
    traceback.print_exc()
    sys.exit(1)
  sys.exit(0)


def _supervise(spec: dict, isolation: dict) -> None:
  """PID 1 of the namespace (or a plain supervisor): run the program, reap, report."""
  _die_with_parent()
  status_fd = spec["status_fd"]
  if isolation["pid"] and isolation["mount"]:
    try:
      _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
      isolation["proc"] = True
    except OSError:
      isolation["proc"] = False
  ready_r, ready_w = os.pipe()
  child = os.fork()
  if child == 0:
    os.close(status_fd)
    os.close(ready_r)
    _run_program(spec, isolation, ready_w)
  os.close(ready_w)
  for fd in spec["channel_fds"]:       # the program's ends: its exit must read as EOF
    os.close(fd)
  report = {"isolation": isolation, "exit": None, "signal": None, "cpu_s": 0.0}
  while True:
    try:
      pid, status, usage = os.wait4(-1, 0)
    except ChildProcessError:
      break
    if pid == child:
      report["cpu_s"] = usage.ru_utime + usage.ru_stime
      if os.WIFSIGNALED(status):
        report["signal"] = os.WTERMSIG(status)
      else:
        report["exit"] = os.WEXITSTATUS(status)
      break
  report["setup_ok"] = os.read(ready_r, 1) == b"1"
  os.write(status_fd, json.dumps(report).encode())
  os._exit(0)


def main() -> None:
  spec = json.loads(sys.argv[1])
  _die_with_parent()
  try:
    for procs in spec["cgroup_procs"]:   # before any fork: every descendant is counted there
      with open(procs, "w") as f:
        f.write("0")
    isolation = _isolate(spec)
  except BaseException as e:
    sys.stderr.write(f"optimas-sandbox: setup failed: {type(e).__name__}: {e}\n")
    os._exit(SETUP_FAILED)
  supervisor = os.fork()
  if supervisor == 0:
    _supervise(spec, isolation)
  os.close(spec["status_fd"])
  for fd in spec["channel_fds"]:
    os.close(fd)
  _, status = os.waitpid(supervisor, 0)
  os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
  main()
