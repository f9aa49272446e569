"""All-or-nothing folder writes, standard library only.

Kept apart from `checkpoint` (which imports JAX and Orbax) so that light
modules such as `system.config` can write atomically without those imports.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile


@contextlib.contextmanager
def replaced_directory(path):
  """Yields an empty temp folder next to `path`; on a clean exit it becomes `path`.

  The old `path` (if any) is moved aside before the rename and removed after,
  so readers see either the old folder or the complete new one. On an
  exception the temp folder is removed and `path` is left untouched.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
  try:
    yield tmp
    if path.exists():
      old = path.with_name(path.name + ".old")
      shutil.rmtree(old, ignore_errors=True)
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
