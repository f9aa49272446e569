"""OpenAICompatLLM against the real server: answers, order, retries, errors, cache, key."""

import logging
import pickle
import time

import pytest

from optimas_jax.llm import SamplingParams
from optimas_jax.llm import ledger as ledger_lib
from optimas_jax.llm.openai_compat import LLMServerError

# One max_new_tokens for the whole file: each value is its own compiled program.
P = SamplingParams(max_new_tokens=4)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
FAST_RETRY = dict(backoff_s=0.01, max_backoff_s=0.05)


def test_chat_and_completion_match_the_local_model(server, make_client, tiny_llm):
  client = make_client(server)
  params = SamplingParams(max_new_tokens=4, return_logprobs=True)
  remote = client.generate(["Hello", CHAT], params)
  local = tiny_llm.generate(["Hello", CHAT], params)
  for r, l in zip(remote, local):
    assert (r.text, r.num_tokens, r.prompt_tokens, r.finish_reason) == (
        l.text, l.num_tokens, l.prompt_tokens, l.finish_reason)
    assert r.logprobs == pytest.approx(l.logprobs, abs=1e-5)
  assert remote[1].prompt_tokens > remote[0].prompt_tokens     # chat template applied server-side
  assert client.usage.as_dict()["completion_tokens"] == 8


def test_parallel_requests_come_back_in_order_and_batched(make_server, make_client, tiny_llm):
  server = make_server(scheduler="window")
  client = make_client(server, max_concurrency=16, cache=False)
  prompts = [f"question {i}" for i in range(16)]
  out = client.generate(prompts, P)
  assert [g.text for g in out] == [g.text for g in tiny_llm.generate(prompts, P)]
  stats = server.stats()
  assert stats["http_requests"] == stats["generated"] == 16
  assert stats["batches"] < 16 and stats["largest_batch"] > 1, stats


def test_slow_server_times_out_after_the_retry_cap(make_server, make_client):
  server = make_server(delay_ms=3000)
  client = make_client(server, timeout_s=0.3, max_retries=2, **FAST_RETRY)
  start = time.monotonic()
  with pytest.raises(LLMServerError, match="gave up after 3 attempts.*timed out after 0.3s"):
    client.generate(["slow"], P)
  assert time.monotonic() - start < 2.5
  assert server.stats()["http_requests"] == 3


def test_5xx_and_429_are_retried(make_server, make_client):
  flaky = make_server(fail_status=503, fail_count=2)
  (g,) = make_client(flaky, max_retries=3, **FAST_RETRY).generate(["hello"], P)
  assert g.num_tokens == 4 and flaky.stats()["http_requests"] == 3
  limited = make_server(fail_status=429, fail_count=1)
  make_client(limited, max_retries=1, cache=False, **FAST_RETRY).generate(["hello"], P)
  assert limited.stats()["http_requests"] == 2

  broken = make_server(fail_status=500, fail_count=-1)
  with pytest.raises(LLMServerError, match="gave up after 3 attempts.*HTTP 500.*injected") as e:
    make_client(broken, max_retries=2, cache=False, **FAST_RETRY).generate(["hello"], P)
  assert e.value.status == 500 and e.value.attempts == 3
  assert broken.stats()["http_requests"] == 3


def test_4xx_fails_at_once_naming_status_and_message(server, make_client):
  client = make_client(server, max_retries=3, **FAST_RETRY)
  with pytest.raises(LLMServerError, match=r"HTTP 400: 'max_tokens' must be .*\[1, 255\]") as e:
    client.generate(["x"], SamplingParams(max_new_tokens=300))   # tiny-llama: 256-token context
  assert e.value.status == 400
  wrong_model = make_client(server, cache=False)
  wrong_model.model = "gpt-nope"
  with pytest.raises(LLMServerError, match="HTTP 404: model 'gpt-nope' is not served"):
    wrong_model.generate(["x"], P)
  assert server.stats()["http_requests"] == 2      # no retries


def test_second_call_is_served_from_the_disk_cache(server, make_client, tmp_path):
  client = make_client(server)
  first = client.generate(["cached?", CHAT], P)
  assert server.stats()["http_requests"] == 2
  again = make_client(server).generate(["cached?", CHAT], P)     # a new client, same file
  assert again == first and server.stats()["http_requests"] == 2
  assert client.cache.stats() == {"hits": 0, "misses": 2}


def test_identical_samples_are_distinct_and_replayed(server, make_client):
  client = make_client(server)
  hot = SamplingParams(temperature=1.0, max_new_tokens=4)
  texts = [g.text for g in client.generate(["roll"] * 4, hot, rng=11)]
  assert len(set(texts)) > 1, texts
  assert [g.text for g in client.generate(["roll"] * 4, hot, rng=11)] == texts
  assert server.stats()["http_requests"] == 4 and len(client.cache) == 4
  with pytest.raises(ValueError, match="needs rng"):
    client.generate(["roll"], hot)


def test_ledger_per_component_with_prices(server, make_client):
  ledger = ledger_lib.Ledger(prices={"tiny-llama": (1.0, 2.0)})
  client = make_client(server, ledger=ledger)
  with ledger_lib.component("solver"):
    (a,) = client.generate(["price me"], P)
    client.generate(["price me"], P)                          # cache hit: free
  (b,) = client.generate([CHAT], P, component="critic")
  rows = ledger.as_dict()
  assert rows["solver"]["calls"] == 1 and rows["solver"]["cache_hits"] == 1
  assert rows["solver"]["cost_usd"] == pytest.approx((a.prompt_tokens + 2 * a.num_tokens) / 1e6)
  assert rows["critic"]["prompt_tokens"] == b.prompt_tokens
  with pytest.raises(ValueError, match="no entry for model 'tiny-llama'"):
    make_client(server, ledger=ledger_lib.Ledger(prices={"gpt-4o": (2.5, 10.0)}))


def test_api_key_is_sent_but_never_shown(make_server, make_client, monkeypatch, caplog, capfd,
                                         tmp_path):
  key = "sk-test-DO-NOT-LEAK-4f9a1c"
  monkeypatch.setenv("MY_LLM_KEY", key)
  server = make_server(api_key=key)
  caplog.set_level(logging.INFO)
  client = make_client(server, api_key_env="MY_LLM_KEY", max_retries=0)
  (g,) = client.generate(["secret"], P)              # the server accepted the key
  errors = []
  with pytest.raises(LLMServerError, match="HTTP 401.*check the API key \\(\\$WRONG_KEY\\)") as e:
    make_client(server, api_key="sk-wrong", api_key_env="WRONG_KEY").generate(["x"], P)
  errors.append(str(e.value))
  with pytest.raises(LLMServerError) as e:
    client.generate(["x"], SamplingParams(max_new_tokens=300))
  errors.append(str(e.value))
  revived = pickle.loads(pickle.dumps(client))
  assert revived.generate(["secret"], P) == [g]   # re-read the key from $MY_LLM_KEY
  out, err = capfd.readouterr()
  cache_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("cache.sqlite*"))
  for shown in (repr(client), str(client.__dict__), *errors, caplog.text, out, err,
                cache_bytes, pickle.dumps(client)):
    assert (key.encode() if isinstance(shown, bytes) else key) not in shown


def test_each_request_samples_with_its_own_seed(server, make_client):
  client = make_client(server, max_concurrency=8, cache=False)
  hot = SamplingParams(temperature=1.0, max_new_tokens=4)
  prompts = [f"sample {i}" for i in range(6)]
  seeds = [101, 102, 103, 104, 105, 106]
  batched = [g.text for g in client.generate(prompts, hot, rng=seeds)]
  # The same request with the same seed, alone or with other neighbours: the same text.
  assert client.generate([prompts[3]], hot, rng=[seeds[3]])[0].text == batched[3]
  assert [g.text for g in client.generate(prompts[3:0:-1], hot, rng=seeds[3:0:-1])] == \
      batched[3:0:-1]
  with pytest.raises(ValueError, match="one per request"):
    client.generate(prompts, hot, rng=seeds[:2])
