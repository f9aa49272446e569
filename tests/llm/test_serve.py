"""The server's OpenAI JSON shapes and errors, raw over HTTP; the CLI as a subprocess."""

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import pytest

from optimas_jax.llm import SamplingParams, serve
from optimas_jax.llm.openai_compat import OpenAICompatLLM


def call(url, body=None, raw=None):
  """(status, JSON) of a GET (no body) or POST."""
  data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
  req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
  try:
    with opener.open(req, timeout=60) as resp:
      return resp.status, json.loads(resp.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_openai_response_shapes(server):
  status, models = call(server.url + "/models")
  assert status == 200 and models["data"][0]["id"] == "tiny-llama"
  status, chat = call(server.url + "/chat/completions", {
      "model": "tiny-llama", "messages": [{"role": "user", "content": [{"type": "text",
                                                                        "text": "Hi"}]}],
      "max_tokens": 4, "temperature": 0, "logprobs": True, "n": 2})
  assert status == 200 and chat["object"] == "chat.completion"
  assert [c["index"] for c in chat["choices"]] == [0, 1]
  c = chat["choices"][0]
  assert c["message"]["role"] == "assistant" and c["finish_reason"] == "length"
  assert len(c["logprobs"]["content"]) == 4
  assert chat["usage"]["completion_tokens"] == 8
  assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + 8
  status, comp = call(server.url + "/completions", {
      "model": "tiny-llama", "prompt": ["a", "b"], "max_tokens": 4, "temperature": 0,
      "logprobs": 1})
  assert status == 200 and comp["object"] == "text_completion"
  assert len(comp["choices"]) == 2 and isinstance(comp["choices"][1]["text"], str)
  assert len(comp["choices"][0]["logprobs"]["token_logprobs"]) == 4


@pytest.mark.parametrize("body, field", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": [1]}, "stop"),
    ({"n": 1000}, "n"),
    ({"stream": True}, "stream"),
])
def test_bad_fields_are_400s_naming_the_field(server, body, field):
  full = {"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
  status, err = call(server.url + "/chat/completions", {**full, **body})
  assert status == 400, err
  assert err["error"]["param"] == field and err["error"]["type"] == "invalid_request_error"
  assert field.split("[")[0] in err["error"]["message"]


def test_other_errors(server):
  assert call(server.url + "/completions", raw=b"{not json")[0] == 400
  status, err = call(server.url + "/completions", {"model": "tiny-llama", "prompt": [1, 2]})
  assert status == 400 and err["error"]["param"] == "prompt"
  assert call(server.url + "/nowhere", {})[0] == 404
  assert call(server.url + "/stats")[1]["generated"] == 0


def test_cli_subprocess_serves(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  log = tmp_path / "server.log"
  with open(log, "w") as stderr:
    proc = subprocess.Popen([sys.executable, "-m", "optimas_jax.serve", "--model=tiny-llama",
                             "--port=0", "--batch_window_ms=5"], stdout=subprocess.PIPE,
                            stderr=stderr, text=True, env=env)
  watchdog = threading.Timer(180, proc.kill)      # a hung start fails the test, not the suite
  watchdog.start()
  try:
    line = proc.stdout.readline()                   # "serving tiny-llama at http://..."
    assert line.startswith("serving tiny-llama at "), (line, log.read_text()[-2000:])
    url = line.split(" at ")[1].strip()
    client = OpenAICompatLLM("tiny-llama", url, cache=tmp_path / "c.sqlite")
    (g,) = client.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_new_tokens=4))
    assert g.num_tokens == 4 and g.prompt_tokens > 0
    stats = call(url + "/stats")[1]                 # the CLI's default: continuous batching
    assert (stats["continuous_completed"], stats["batches"], stats["generated"]) == (1, 0, 1)
  finally:
    watchdog.cancel()
    proc.terminate()
    proc.wait(timeout=30)


def test_a_seeded_request_gets_the_same_text_alone_or_batched(make_server, tiny_llm):
  server = make_server(batch_window_ms=300, scheduler="window")
  body = lambda text, seed, n=1: {
      "model": "tiny-llama", "messages": [{"role": "user", "content": text}], "max_tokens": 6,
      "temperature": 1.0, "seed": seed, "n": n}
  text_of = lambda reply: [c["message"]["content"] for c in reply[1]["choices"]]
  (alone,) = text_of(call(server.url + "/chat/completions", body("roll the dice", 5)))
  assert server.stats()["largest_batch"] == 1
  bodies = [body(f"other question {i}", 50 + i) for i in range(5)]
  bodies.insert(2, body("roll the dice", 5))
  with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
    replies = list(pool.map(lambda b: call(server.url + "/chat/completions", b), bodies))
  assert server.stats()["largest_batch"] > 1, server.stats()
  assert text_of(replies[2]) == [alone]
  # n answers of one request: choice 0 is the seed's own key, the others fold in their index.
  first, second = text_of(call(server.url + "/chat/completions", body("roll the dice", 5, n=2)))
  assert first == alone and second != alone
  # A client replays it locally: seed 5 is jax.random.key(5) for that one row.
  assert (jax.random.key_data(serve.request_key(5)) == jax.random.key_data(jax.random.key(5))).all()
  params = SamplingParams(temperature=1.0, max_new_tokens=6)
  (local,) = tiny_llm.generate([[{"role": "user", "content": "roll the dice"}]], params,
                               jnp.stack([jax.random.key(5)]))
  assert local.text == alone
  assert len({jax.random.key_data(serve.request_key(s)).tobytes()
              for s in (-1, 1 << 40, (1 << 40) + 1, 2**64 - 1)}) == 3   # -1 == 2**64 - 1


def test_a_server_seed_makes_unseeded_requests_repeatable(make_server):
  """Peers' clients send no seed; with --seed a repeated run gets the same answers."""
  body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "roll the dice"}],
          "max_tokens": 6, "temperature": 1.0}
  text_of = lambda reply: reply[1]["choices"][0]["message"]["content"]
  runs = []
  for _ in range(2):
    server = make_server(seed=7)
    runs.append([text_of(call(server.url + "/chat/completions", body)) for _ in range(2)])
  assert runs[0] == runs[1]
  assert runs[0][0] != runs[0][1]              # a repeated request is a new sample
  other = make_server(seed=8)
  assert text_of(call(other.url + "/chat/completions", body)) != runs[0][0]
  assert make_server().seed_of(None, "anything") is None       # no server seed: a fresh draw
  assert make_server(seed=7).seed_of(5, "anything") == 5       # a client's own seed wins


def test_a_full_queue_or_too_many_requests_are_answered_429(make_server):
  body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}],
          "max_tokens": 2, "temperature": 0, "n": 3}
  small = make_server(max_queue=2)
  status, reply = call(small.url + "/chat/completions", body)        # 3 answers > 2 queued
  assert status == 429 and reply["error"]["type"] == "rate_limit_error"
  assert call(small.url + "/chat/completions", {**body, "n": 2})[0] == 200
  one = make_server(max_inflight=1, delay_ms=800)
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    statuses = sorted(s for s, _ in pool.map(
        lambda _: call(one.url + "/chat/completions", {**body, "n": 1}), range(3)))
  assert statuses[0] == 200 and 429 in statuses
  assert one.stats()["busy"] >= 1


def test_the_seen_request_memo_is_bounded(make_server):
  server = make_server(seed=1, max_seen=3)
  seeds = [server.seed_of(None, f"request {i}") for i in range(10)]
  assert len(server._seen_requests) == 3 and len(set(seeds)) == 10
  again = server.seed_of(None, "request 9")                  # remembered: its second sample
  assert again != seeds[9]


def test_continuous_batching_returns_short_answers_while_a_long_one_runs(tiny_llm):
  from optimas_jax.llm import local
  from optimas_jax.models import registry
  # A fresh local model: its continuous decoder's counters are this test's alone.
  llm = local.LocalLLM(registry.load_backbone("tiny-llama"), max_batch=4, max_context=4096)
  server = serve.Server(llm, "tiny-llama", "127.0.0.1", 0, batch_window_ms=5, max_batch=4,
                        continuous_context=128).start()
  body = lambda text, tokens, seed=None: {
      "model": "tiny-llama", "messages": [{"role": "user", "content": text}],
      "max_tokens": tokens, "temperature": 1.0 if seed is not None else 0.0, "seed": seed}
  text_of = lambda reply: reply[1]["choices"][0]["message"]["content"]
  done = {}
  try:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      def ask(name, b):
        reply = call(server.url + "/chat/completions", b)
        done[name] = len(done)
        return reply
      long = pool.submit(ask, "long", body("tell a long story", 80))
      while llm.continuous_stats().get("calls", 0) < 3:   # the long answer is decoding
        threading.Event().wait(0.01)
      shorts = [pool.submit(ask, f"short{i}", body(f"roll the dice {i}", 6, seed=5 + i))
                for i in range(3)]
      short_texts = [text_of(f.result()) for f in shorts]
      long_reply = long.result()
    # The short answers joined the running batch and came back before the long one.
    assert done["long"] == 3 and long_reply[0] == 200
    assert long_reply[1]["usage"]["completion_tokens"] == 80
    assert long_reply[1]["choices"][0]["finish_reason"] == "length"
    stats = server.stats()
    assert stats["continuous_max_active"] >= 2 and stats["continuous_completed"] == 4
    assert stats["batches"] == 0 and stats["generated"] == 4
    # Each answer is the one the model gives that request alone with the same key.
    params = SamplingParams(temperature=1.0, max_new_tokens=6)
    for i, text in enumerate(short_texts):
      (alone,) = tiny_llm.generate([[{"role": "user", "content": f"roll the dice {i}"}]],
                                   params, jnp.stack([jax.random.key(5 + i)]))
      assert text == alone.text
    # A request longer than a slot (128 columns) takes the window.
    status, reply = call(server.url + "/chat/completions", body("hi", 150))
    assert status == 200 and server.stats()["batches"] == 1
  finally:
    server.close()
    llm.continuous_decoder(128, 4).close()
