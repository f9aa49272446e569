"""The peers' packages (DSPy, GEPA, TextGrad), kept offline and on loopback.

  from optimas_jax.peers import env
  dspy = env.require("dspy", cache_dir=workdir)   # offline settings first, then the import

`require` sets what these libraries read at import time to stay offline
(LiteLLM's bundled cost map instead of a download, no telemetry, DSPy's
cache in the run's folder) and, when a package is missing, raises one error
naming it and the pip command. `LoopbackOnly` records, and by default
refuses, every connection a run tries outside loopback (a process-wide
audit hook: every thread, every library).
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import os
import pathlib
import sys
import tempfile
import threading

# name -> (import name, pip requirement); the ranges are those of the `peers` extra.
PACKAGES = {
    "dspy": ("dspy", "dspy[optuna]>=3.4.1,<3.5"),
    "gepa": ("gepa", "gepa>=0.1.4,<0.2"),
    "textgrad": ("textgrad", "textgrad>=0.1.8,<0.2"),
}
PIP_EXTRA = "pip install -e '.[peers]'"
# Modules a package needs beyond itself (MIPROv2 searches with optuna, an extra of dspy).
EXTRA_MODULES = {"dspy": ("optuna",)}

# Read by the libraries at import (or first use); set only where the user has not.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",   # LiteLLM: the bundled model cost map, no fetch
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",                    # textgrad imports `datasets`
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class PeerPackageMissing(ImportError):
  """A peer package is not installed; the message names it and the pip command."""


def offline(cache_dir: str | os.PathLike | None = None) -> None:
  """Sets the offline variables (unless already set); DSPy's cache goes under `cache_dir`."""
  for name, value in OFFLINE_ENV.items():
    os.environ.setdefault(name, value)
  if cache_dir is not None and "dspy" not in sys.modules:
    os.environ.setdefault("DSPY_CACHEDIR", str(pathlib.Path(cache_dir) / "dspy_cache"))
  if "textgrad" not in sys.modules and "TEXTGRAD_LOG_DIR" not in os.environ:
    # TextGrad writes a log file at import, by default into ./logs of the working directory.
    logs = (pathlib.Path(cache_dir) if cache_dir is not None
            else pathlib.Path(tempfile.gettempdir()) / "optimas_jax") / "textgrad_logs"
    os.environ["TEXTGRAD_LOG_DIR"] = str(logs) + os.sep


def require(name: str, cache_dir: str | os.PathLike | None = None, what: str = ""):
  """The imported package `name` (dspy, gepa or textgrad), offline; a clear error if missing."""
  if name not in PACKAGES:
    raise ValueError(f"unknown peer package {name!r}; known: {sorted(PACKAGES)}")
  module, requirement = PACKAGES[name]
  offline(cache_dir)
  try:
    mod = importlib.import_module(module)
    for extra in EXTRA_MODULES.get(name, ()):
      importlib.import_module(extra)
  except ImportError as e:
    need = f"{what} needs" if what else "this needs"
    raise PeerPackageMissing(
        f"{need} the {name!r} package, which is not installed ({e}). Install the peers "
        f"extra: {PIP_EXTRA}  (or only this one: pip install '{requirement}')") from None
  _quiet_litellm()
  if name == "textgrad":
    # TextGrad logs every prompt at INFO to its own file; not to the run's console too.
    import logging
    logging.getLogger("textgrad").propagate = False
  return mod


def _quiet_litellm() -> None:
  """All three call models through LiteLLM (or DSPy's LM over it): no telemetry, no banners."""
  import logging
  import litellm
  # "LM response was truncated" on every capped reply of a small model: not news.
  logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
  litellm.telemetry = False
  litellm.suppress_debug_info = True
  litellm.drop_params = True        # unknown OpenAI params are dropped, not sent


# ------------------------------------------------------------- loopback


def is_loopback_host(host) -> bool:
  if isinstance(host, bytes):
    host = host.decode(errors="replace")
  host = str(host).strip("[]").lower()
  if host in ("localhost", "localhost.localdomain", "ip6-localhost", ""):
    return True
  try:
    return ipaddress.ip_address(host.split("%")[0]).is_loopback
  except ValueError:
    return False


class LoopbackOnly:
  """While active, records (and with `block=True` refuses) connections outside loopback.

    with env.LoopbackOnly() as guard:
      ...                       # any thread: a non-loopback connect raises ConnectionRefusedError
    assert not guard.outside

  Name lookups and connects are both audited (`socket.getaddrinfo`,
  `socket.connect`); Unix sockets are not network traffic and pass.
  """

  _active: list["LoopbackOnly"] = []
  _lock = threading.Lock()
  _hooked = False

  def __init__(self, block: bool = True):
    self.block = block
    self.outside: list[tuple[str, str]] = []

  def __enter__(self) -> "LoopbackOnly":
    with LoopbackOnly._lock:
      if not LoopbackOnly._hooked:
        sys.addaudithook(_audit)          # audit hooks cannot be removed: install once
        LoopbackOnly._hooked = True
      LoopbackOnly._active.append(self)
    return self

  def __exit__(self, *exc) -> None:
    with LoopbackOnly._lock:
      LoopbackOnly._active.remove(self)


def _audit(event: str, args) -> None:
  if not LoopbackOnly._active or event not in ("socket.connect", "socket.getaddrinfo"):
    return
  if event == "socket.connect":
    address = args[1]
    if not isinstance(address, tuple):          # AF_UNIX path
      return
    host = address[0]
  else:
    host = args[0]
    if host is None:
      return
  if is_loopback_host(host):
    return
  refuse = False
  for guard in list(LoopbackOnly._active):
    guard.outside.append((event, str(host)))
    refuse = refuse or guard.block
  if refuse:
    raise ConnectionRefusedError(f"optimas_jax.peers: {event} to {host!r} refused; peer runs "
                                 "stay on loopback (env.LoopbackOnly)")


@contextlib.contextmanager
def loopback_only(block: bool = True):
  with LoopbackOnly(block) as guard:
    yield guard
