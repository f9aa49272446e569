"""Ledger, response cache and usage counters on their own (no server)."""

import concurrent.futures
import json

import jax
import jax.numpy as jnp
import pytest

from optimas_jax.llm import Generation, SamplingParams, Usage
from optimas_jax.llm import cache as cache_lib
from optimas_jax.llm import factory
from optimas_jax.llm import ledger as ledger_lib
from optimas_jax.core.seeds import row_seeds, sample_seed, seed_from_rng

URL = "http://127.0.0.1:8000/v1"


def test_ledger_components_and_cost():
  ledger = ledger_lib.Ledger(prices={"m": (1.0, 4.0)})
  with ledger_lib.component("answer"):
    ledger.record("m", 1000, 500)
    with ledger_lib.component("critic"):
      ledger.record("m", 10, 0)
    ledger.record("m", 0, 0, cached=True)
  ledger.record("m", 1, 1, component="explicit")
  ledger.record("m", 1, 1)
  rows = ledger.as_dict()
  assert rows["answer"] == {"calls": 1, "cache_hits": 1, "prompt_tokens": 1000,
                            "completion_tokens": 500, "cost_usd": pytest.approx(0.003)}
  assert rows["critic"]["calls"] == 1 and set(rows) == {"answer", "critic", "explicit", "default"}
  assert ledger.total()["calls"] == 4
  with pytest.raises(ValueError, match="'other'.*add 'other'"):
    ledger.check_priced("other")
  ledger_lib.Ledger().check_priced("anything")    # no table: free, no error


def test_ledger_component_is_per_thread():
  ledger = ledger_lib.Ledger()

  def work(i):
    with ledger_lib.component(f"c{i % 2}"):
      for _ in range(100):
        ledger.record("m", 1, 2)

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(work, range(8)))
  rows = ledger.as_dict()
  assert rows["c0"]["calls"] == rows["c1"]["calls"] == 400
  assert rows["c0"]["completion_tokens"] == 800


def test_cache_roundtrip_and_keys(tmp_path):
  cache = cache_lib.ResponseCache(tmp_path / "c.sqlite")
  greedy, hot = SamplingParams(max_new_tokens=4), SamplingParams(temperature=1.0)
  key = lambda model, request, params, seed: cache_lib.cache_key(model, request, params, seed,
                                                                 base_url=URL)
  k = key("m", "hi", greedy, None)
  # Greedy ignores the seed; sampling keeps seeds apart.
  assert k == key("m", "hi", greedy, 5)
  assert len({key("m", "hi", hot, s) for s in range(3)}) == 3
  assert k != key("m2", "hi", greedy, None)
  assert k != key("m", [{"role": "user", "content": "hi"}], greedy, None)
  assert k == cache_lib.cache_key("m", "hi", greedy, None, base_url=URL + "/")
  assert cache.get(k) is None
  g = Generation(text="x", num_tokens=1, prompt_tokens=2, finish_reason="stop", logprobs=(-0.5,))
  cache.put(k, "m", g)
  assert cache.get(k) == g and cache.stats() == {"hits": 1, "misses": 1}
  cache.close()
  assert cache_lib.ResponseCache(tmp_path / "c.sqlite").get(k) == g   # on disk


def test_seeds():
  assert seed_from_rng(7) == 7
  key = jax.random.PRNGKey(3)
  assert seed_from_rng(key) == seed_from_rng(jax.random.PRNGKey(3)) != seed_from_rng(
      jax.random.PRNGKey(4))
  assert seed_from_rng(jax.random.key(3)) == seed_from_rng(key)
  assert sample_seed(7, 0) == 7 and len({sample_seed(7, i) for i in range(5)}) == 5
  with pytest.raises(TypeError, match="rng"):
    seed_from_rng("seed")


def test_row_seeds_come_from_each_rows_own_key():
  keys = jax.vmap(jax.random.key)(jnp.arange(4, dtype=jnp.uint32))
  seeds = row_seeds(keys, 4)
  assert seeds == [seed_from_rng(keys[i]) for i in range(4)] and len(set(seeds)) == 4
  # A row's seed is its own: the same key gives the same seed in any batch.
  assert row_seeds(keys[2:3], 1) == [seeds[2]]
  assert row_seeds(jax.random.key_data(keys), 4) == seeds       # raw per-row keys
  assert row_seeds([3, 9], 2) == [3, 9]
  # One int or key for the call: row r derives its own seed from it and r.
  assert row_seeds(7, 3) == [7, sample_seed(7, 1), sample_seed(7, 2)]
  single = jax.random.key(5)
  assert row_seeds(single, 2) == [seed_from_rng(single), sample_seed(seed_from_rng(single), 1)]
  with pytest.raises(ValueError, match="one per request"):
    row_seeds(keys, 3)


def test_cache_key_includes_the_base_url(tmp_path):
  cache = cache_lib.ResponseCache(tmp_path / "c.sqlite")
  params = SamplingParams(temperature=0.7)
  a = cache_lib.cache_key("m", "hi", params, 3, base_url="http://host-a:8000/v1")
  b = cache_lib.cache_key("m", "hi", params, 3, base_url="http://host-b:8000/v1")
  assert a != b
  cache.put(a, "m", Generation(text="from a", num_tokens=2, prompt_tokens=1,
                               finish_reason="stop"))
  assert cache.get(b) is None and cache.get(a).text == "from a"
  with pytest.raises(ValueError, match="base_url"):
    cache_lib.cache_key("m", "hi", params, 3, base_url="")


def _json_round_trip(state):
  return json.loads(json.dumps(state))


def test_usage_ledger_and_cache_counters_round_trip(tmp_path):
  usage = Usage()
  usage.add([Generation("x", 3, 5, "stop", truncated_prompt_tokens=1),
             Generation("y", 2, 4, "length")])
  back = Usage()
  back.load_state_dict(_json_round_trip(usage.state_dict()))
  assert back.as_dict() == usage.as_dict() == {
      "requests": 2, "prompt_tokens": 9, "completion_tokens": 5, "truncated_prompts": 1}
  with pytest.raises(ValueError, match="unknown counters.*'tokens'"):
    back.load_state_dict({"tokens": 3})

  ledger = ledger_lib.Ledger(prices={"m": (1.0, 2.0)})
  ledger.record("m", 100, 10, component="a")
  ledger.record("m", 0, 0, component="b", cached=True)
  resumed = ledger_lib.Ledger(prices={"m": (1.0, 2.0)})
  resumed.load_state_dict(_json_round_trip(ledger.state_dict()))
  assert resumed.as_dict() == ledger.as_dict()
  resumed.record("m", 100, 10, component="a")            # counting goes on from the state
  assert resumed.as_dict()["a"]["calls"] == 2
  assert resumed.as_dict()["a"]["cost_usd"] == pytest.approx(2 * 120 / 1e6)
  with pytest.raises(ValueError, match="entry 'a' has unknown counters"):
    resumed.load_state_dict({"entries": {"a": {"dollars": 1}}})

  cache = cache_lib.ResponseCache(tmp_path / "c.sqlite")
  cache.get("missing")
  fresh = cache_lib.ResponseCache(tmp_path / "c.sqlite")
  fresh.load_state_dict(_json_round_trip(cache.state_dict()))
  assert fresh.stats() == {"hits": 0, "misses": 1}


def test_pool_state_covers_ledger_backends_and_later_builds(tmp_path, monkeypatch):
  secret = "sk-test-never-in-state"
  monkeypatch.setenv("OPENAI_API_KEY", secret)
  cfg = factory.api_config("gpt-4o-mini")
  cfg.base_url = URL
  cfg.cache = str(tmp_path / "responses.sqlite")
  pool = factory.LLMPool(cfg)
  gpt = pool.get()
  gpt.usage.add([Generation("x", 3, 5, "stop")])
  gpt.cache.get("missing")
  pool.ledger.record("gpt-4o-mini", 5, 3, component="solver")
  state = _json_round_trip(pool.state_dict())
  assert secret not in json.dumps(state) and URL not in json.dumps(state)
  assert state["models"]["gpt-4o-mini"] == {
      "usage": {"requests": 1, "prompt_tokens": 5, "completion_tokens": 3,
                "truncated_prompts": 0},
      "response_cache": {"hits": 0, "misses": 1}}

  # A resumed pool: the ledger at once, each backend when it is first built.
  state["models"]["gpt-4o"] = {"usage": {"requests": 7}}
  resumed = factory.LLMPool(cfg)
  resumed.load_state_dict(state)
  assert resumed.ledger.as_dict() == pool.ledger.as_dict()
  assert resumed.state_dict()["models"]["gpt-4o"] == {"usage": {"requests": 7}}   # not built yet
  assert resumed.get("gpt-4o").usage.as_dict()["requests"] == 7
  again = resumed.get()
  assert again.usage.as_dict() == gpt.usage.as_dict()
  assert again.cache.stats() == {"hits": 0, "misses": 1}
  assert resumed.usage()["models"]["gpt-4o-mini"]["requests"] == 1
  with pytest.raises(ValueError, match="unknown fields"):
    resumed.load_state_dict({"llms": {}})
