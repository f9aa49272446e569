"""The peers' tests: the real DSPy / GEPA / TextGrad against tiny-llama served on loopback.

They need the `peers` extra (pip install -e '.[peers]'); without it each
module is skipped with that command in the reason.
"""

import os
import tempfile

import pytest

# DSPy reads its cache folder at import; TextGrad writes a log file at import.
_SCRATCH = tempfile.mkdtemp(prefix="optimas_peers_tests_")
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(_SCRATCH, "dspy_cache"))
os.environ.setdefault("TEXTGRAD_LOG_DIR", os.path.join(_SCRATCH, "textgrad_logs") + os.sep)


def require_peers():
  """Skips the calling module, naming the pip command, when a peer package is missing."""
  from optimas_jax.peers import env
  try:
    for name in env.PACKAGES:
      env.require(name, what="tests/peers")
  except env.PeerPackageMissing as e:
    pytest.skip(str(e), allow_module_level=True)


@pytest.fixture(scope="session")
def tiny_llm():
  from optimas_jax.llm import local
  return local.load_local_llm("tiny-llama")


@pytest.fixture(scope="session")
def server(tiny_llm):
  """One loopback server over tiny-llama for the session (batches up to 16 requests)."""
  from optimas_jax.llm import serve
  s = serve.Server(tiny_llm, "tiny-llama", "127.0.0.1", 0, batch_window_ms=50,
                   max_batch=16, scheduler="window").start()   # as ServedModel.start
  yield s
  s.close()


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("OPTIMAS_LLM_CACHE", str(tmp_path / "llm_cache.sqlite"))
