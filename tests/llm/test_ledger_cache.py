"""Ledger and response cache on their own (no server)."""

import concurrent.futures

import jax
import pytest

from optimas_jax.llm import Generation, SamplingParams
from optimas_jax.llm import cache as cache_lib
from optimas_jax.llm import ledger as ledger_lib
from optimas_jax.llm.openai_compat import sample_seed, seed_from_rng


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
  k = cache_lib.cache_key("m", "hi", greedy, None, 0)
  # Greedy ignores seed and sample index; sampling keeps them apart.
  assert k == cache_lib.cache_key("m", "hi", greedy, 5, 3)
  assert len({cache_lib.cache_key("m", "hi", hot, 1, i) for i in range(3)}) == 3
  assert cache_lib.cache_key("m", "hi", hot, 1, 0) != cache_lib.cache_key("m", "hi", hot, 2, 0)
  assert k != cache_lib.cache_key("m2", "hi", greedy, None, 0)
  assert k != cache_lib.cache_key("m", [{"role": "user", "content": "hi"}], greedy, None, 0)
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
