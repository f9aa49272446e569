"""glibc malloc settings that let XLA:CPU reuse its buffers instead of faulting them in.

XLA:CPU allocates each execution's temporary buffer anew (94 MB for one MiniLM
layer's forward + backward at 16 x 128 tokens) and frees it after. glibc serves an
allocation that large with mmap (any allocation over 64 MB from a worker thread's
arena, whatever its thresholds) and unmaps it on free, so every step faults the
buffer's pages in again and the kernel zeroes them: 23,000 page faults and ~45 ms
of system time per step of that layer (probe, this 2-core host). With one arena, no
mmap and no trimming, freed memory stays in the process and the next step reuses it:
0 faults and ~0.3 ms of system time per step.

The settings are process-wide and bind only threads created after them, so
`reuse_freed_memory` must run before JAX starts its CPU backend (its thread pools).
It does nothing on a non-glibc C library (macOS), where JAX will run on an
accelerator (the buffers then live on the device), when the backend has started, or
when $OPTIMAS_JAX_HOST_MALLOC is "default".
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform

ENV = "OPTIMAS_JAX_HOST_MALLOC"

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# Memory above the heap's top is returned to the system only beyond this (mallopt
# takes a C int).
_TRIM_THRESHOLD = (1 << 31) - 1
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))

_applied: str | None = None


def _accelerator_expected() -> bool:
  """Whether JAX will pick a GPU or TPU backend (a platform list or an installed plugin)."""
  import jax  # pylint: disable=import-outside-toplevel
  platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
  if platforms:
    return platforms.split(",")[0].strip() not in ("cpu", "")
  return bool(importlib.metadata.entry_points(group="jax_plugins"))


def _backend_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  return xla_bridge.backends_are_initialized()


def reuse_freed_memory() -> str:
  """Applies the settings where they help; returns what was done, for the logs.

  One of "reuse" (applied now or earlier in this process), "default: <why not>".
  """
  global _applied
  if _applied is not None:
    return _applied
  if os.environ.get(ENV, "reuse") == "default":
    return f"default: ${ENV}=default"
  if platform.libc_ver()[0] != "glibc":
    return "default: not glibc"
  if _accelerator_expected():
    return "default: an accelerator backend"
  if _backend_started():
    return "default: the backend started before the settings"
  libc = ctypes.CDLL(None)
  for param, value in _SETTINGS:
    if libc.mallopt(param, value) != 1:
      return f"default: mallopt({param}, {value}) refused"
  _applied = "reuse"
  return _applied
