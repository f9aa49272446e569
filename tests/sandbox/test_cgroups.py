"""The cgroup v2 path's file protocol on a fake cgroupfs.

The machines here mount v2 without controllers (memory and pids are bound to
v1), so the kernel's enforcement of memory.max / pids.max is tested through
v1 in test_isolation.py; this checks what the v2 path writes and when it
declines, which a wrong file name or a missing delegation step would fail.
"""

import pytest

from optimas_jax.sandbox import cgroups


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
  (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
  parent = tmp_path / "work.slice"
  parent.mkdir()
  (parent / "cgroup.controllers").write_text("cpu memory pids\n")
  (parent / "cgroup.subtree_control").write_text("cpu\n")
  monkeypatch.setattr(cgroups, "ROOT", tmp_path)
  monkeypatch.setattr(cgroups, "_own_path", lambda controller: "/work.slice")
  monkeypatch.setattr(cgroups.os, "geteuid", lambda: 0)
  return parent


def test_v2_group_gets_memory_swap_and_pids_limits_under_the_own_group(fake_v2, monkeypatch):
  made = []
  real_fresh = cgroups._fresh

  def fresh(folder):
    real_fresh(folder)
    (folder / "memory.swap.max").write_text("max\n")    # what the kernel creates
    made.append(folder)

  monkeypatch.setattr(cgroups, "_fresh", fresh)
  group = cgroups.create("optimas-sandbox-60001", 512 << 20, 18)
  folder = fake_v2 / "optimas-sandbox-60001"
  assert made == [folder] and group.folders == [folder]
  assert (folder / "memory.max").read_text() == str(512 << 20)
  assert (folder / "memory.swap.max").read_text() == "0"
  assert (folder / "pids.max").read_text() == "18"
  # memory and pids were delegated to the children of the own group.
  assert (fake_v2 / "cgroup.subtree_control").read_text() in ("+memory", "+pids")
  assert group.procs_files == [str(folder / "cgroup.procs")]
  (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
  assert group.oom_kills() == 2


def test_v2_without_the_controllers_declines(fake_v2):
  (fake_v2 / "cgroup.controllers").write_text("cpu io\n")
  assert cgroups.create("optimas-sandbox-60002", 1 << 30, 16) is None
  assert not (fake_v2 / "optimas-sandbox-60002").exists()
