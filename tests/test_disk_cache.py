"""Least-recently-used bounds for what the package keeps on disk (core/disk_cache.py)."""

import os

from optimas_jax.core import disk_cache


def _entry(folder, name, size, used_at, is_dir=False):
  path = folder / name
  if is_dir:
    path.mkdir()
    (path / "a").write_bytes(b"x" * (size // 2))
    (path / "sub").mkdir()
    (path / "sub" / "b").write_bytes(b"x" * (size - size // 2))
  else:
    path.write_bytes(b"x" * size)
  os.utime(path, (used_at, used_at))
  return path


def test_the_least_recently_used_go_first_until_the_bytes_fit(tmp_path):
  old = _entry(tmp_path, "old", 100, 1.0)
  mid = _entry(tmp_path, "mid", 100, 2.0, is_dir=True)
  new = _entry(tmp_path, "new", 100, 3.0)
  assert disk_cache.size_of(mid) == 100
  removed = disk_cache.evict([old, mid, new], max_bytes=250)
  assert removed == [old] and mid.exists() and new.exists()
  disk_cache.touch(mid)                    # used now: the newest
  assert disk_cache.evict([mid, new], max_bytes=150) == [new]


def test_the_entry_just_written_is_kept_whatever_its_size(tmp_path):
  big = _entry(tmp_path, "big", 500, 1.0)
  small = _entry(tmp_path, "small", 10, 2.0)
  assert disk_cache.evict([big, small], max_bytes=100, keep=big) == [small]
  assert big.exists()


def test_past_the_bound_every_older_entry_goes_even_a_small_one(tmp_path):
  new = _entry(tmp_path, "new", 60, 3.0)
  mid = _entry(tmp_path, "mid", 60, 2.0)
  old = _entry(tmp_path, "old", 10, 1.0)       # would fit on its own
  assert disk_cache.evict([old, mid, new], max_bytes=100) == [mid, old]


def test_an_entry_count_bound_keeps_the_newest(tmp_path):
  entries = [_entry(tmp_path, f"e{i}", 1, float(i), is_dir=True) for i in range(4)]
  removed = disk_cache.evict(entries, max_entries=2)
  assert sorted(removed) == entries[:2]
  assert [e.exists() for e in entries] == [False, False, True, True]
  assert disk_cache.evict(entries, max_entries=2) == []       # gone ones are skipped
