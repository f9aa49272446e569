"""Real servers (``optimas_jax.llm.serve`` over tiny-llama) on free loopback ports."""

import pytest

from optimas_jax.llm import local, serve
from optimas_jax.llm.openai_compat import OpenAICompatLLM


@pytest.fixture(scope="session")
def tiny_llm():
  return local.load_local_llm("tiny-llama")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
  # A client built with the default cache must not write to ~/.cache during tests.
  monkeypatch.setenv("OPTIMAS_LLM_CACHE", str(tmp_path / "default_cache.sqlite"))
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def make_server(tiny_llm):
  """``make_server(**Server options)`` -> a started server; all closed after the test."""
  servers = []

  def make(**options):
    server = serve.Server(tiny_llm, "tiny-llama", "127.0.0.1", 0, **options).start()
    servers.append(server)
    return server

  yield make
  for s in servers:
    s.close()


@pytest.fixture
def server(make_server):
  return make_server()


@pytest.fixture
def make_client(tmp_path):
  """``make_client(server, **OpenAICompatLLM options)``: a tmp disk cache unless given."""
  clients = []

  def make(server, **kw):
    kw.setdefault("cache", tmp_path / "cache.sqlite")
    client = OpenAICompatLLM("tiny-llama", server.url, **kw)
    clients.append(client)
    return client

  yield make
  for c in clients:
    c.close()
