"""Offline settings, the loopback guard, missing packages, and OptimasAdapter's format/parse."""

import socket

import pytest

from tests.peers.conftest import require_peers

require_peers()

import dspy  # noqa: E402

from optimas_jax.peers import env  # noqa: E402
from optimas_jax.peers.dspy_adapter import (AdapterParseError, CountingChatAdapter,  # noqa: E402
                                            OptimasAdapter)


def test_offline_settings_are_set_before_the_libraries_load():
  import os
  assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"   # no cost-map download
  import litellm
  assert litellm.telemetry is False


def test_a_missing_peer_names_itself_and_the_pip_command(monkeypatch):
  import importlib
  real = importlib.import_module

  def fake(name, *a, **k):
    if name == "textgrad":
      raise ImportError("No module named 'textgrad'")
    return real(name, *a, **k)

  monkeypatch.setattr(importlib, "import_module", fake)
  with pytest.raises(env.PeerPackageMissing) as e:
    env.require("textgrad", what="the TextGrad baseline")
  message = str(e.value)
  assert "'textgrad'" in message and "pip install -e '.[peers]'" in message
  assert "pip install 'textgrad>=" in message and "the TextGrad baseline" in message


def test_loopback_guard_refuses_and_records_outside_connections():
  with env.LoopbackOnly() as guard:
    with pytest.raises(ConnectionRefusedError):
      socket.create_connection(("192.0.2.1", 9), timeout=0.5)     # TEST-NET-1: never routed
    with pytest.raises(ConnectionRefusedError):
      socket.getaddrinfo("example.com", 443)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    socket.create_connection(server.getsockname(), timeout=2).close()   # loopback passes
    server.close()
  assert [host for _, host in guard.outside] == ["192.0.2.1", "example.com"]
  socket.socket().close()                     # no guard active: nothing recorded or refused


SIG = dspy.Signature("question -> answer", "Answer with the city only.")


def test_format_is_what_our_components_send():
  messages = OptimasAdapter().format(SIG, [{"question": "Capital of Peru?", "answer": "Lima"}],
                                     {"question": "Capital of France?"})
  assert messages == [
      {"role": "system", "content": "Answer with the city only."},
      {"role": "user", "content": "Capital of Peru?"},
      {"role": "assistant", "content": "Lima"},
      {"role": "user", "content": "Capital of France?"}]
  two = dspy.Signature("question, passages: list[str] -> query, k: int", "Search.")
  _, user = OptimasAdapter().format(two, [], {"question": "q", "passages": ["a", "b"]})
  assert user["content"] == "Question: q\n\nPassages:\n- a\n- b\n\nReply in this form:\nQuery: ...\nK: ..."


def test_parse_takes_the_first_line_and_labels_and_types():
  a = OptimasAdapter()
  assert a.parse(SIG, "\n  Answer: Paris\nBecause it is the capital.") == {"answer": "Paris"}
  assert OptimasAdapter(first_line=False).parse(SIG, "Paris\nis big") == {"answer": "Paris\nis big"}
  two = dspy.Signature("question -> query, k: int")
  assert a.parse(two, "query: capital france\nK: 3") == {"query": "capital france", "k": 3}
  with pytest.raises(AdapterParseError):
    a.parse(two, "capital france")           # no "K: ..." line
  with pytest.raises(AdapterParseError):
    a.parse(two, "Query: x\nK: many")        # not an int
  with pytest.raises(AdapterParseError):
    a.parse(SIG, "   \n")


def test_dspys_own_adapter_fails_on_a_plain_reply_ours_parses():
  # What SmolLM2-135M writes: the answer, no "[[ ## answer ## ]]" markers, no JSON.
  with pytest.raises(AdapterParseError):
    CountingChatAdapter().parse(SIG, "Paris")
  assert OptimasAdapter().parse(SIG, "Paris") == {"answer": "Paris"}
