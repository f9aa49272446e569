"""Each experiment's `:api` variant, pointed at a live local server instead of OpenAI.

The configs are the paper's (gpt-4o-mini, the PubMedQA model set, prices);
only the base URL and the model names change, so the HTTP backend, the
routing, the per-component ledger and the response cache run for real.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

from optimas_jax.llm import factory
from optimas_jax.tasks import registry

ROOT = pathlib.Path(__file__).parents[2]
SHARED = ROOT.parent / "shared" / "data"


def _config(name, arg="api"):
  spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _point_at(config, server, tmp_path):
  config.llm.model = "tiny-llama"
  config.llm.base_url = server.url
  config.llm.prices = (("tiny-llama", 0.15, 0.60),)
  config.llm.cache = str(tmp_path / "responses.sqlite")
  config.system.cache_dir = str(tmp_path / "cache")


def test_api_configs_keep_the_papers_models_and_prices():
  pubmed = _config("pubmedqa")
  assert pubmed.llm.backend == "openai" and pubmed.llm.model == "gpt-4o-mini"
  assert "claude-3-5-haiku-20241022" in pubmed.system.context_models
  assert set(pubmed.system.solver_models) <= {m for m, _, _ in pubmed.llm.prices}
  assert _config("hotpotqa").llm.model == _config("amazon").llm.model == "gpt-4o-mini"


def test_routes_send_claude_models_to_their_own_url_and_key(monkeypatch):
  monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-secret")
  pool = factory.LLMPool(factory.api_config())
  claude = pool.get("claude-3-5-haiku-20241022")
  gpt = pool.get("gpt-4o-mini")
  assert claude.base_url == "https://api.anthropic.com/v1" and claude.api_key_env == "ANTHROPIC_API_KEY"
  assert gpt.api_key_env == "OPENAI_API_KEY"
  assert claude.ledger is gpt.ledger
  assert "sk-ant-test-secret" not in repr(claude) + repr(pool.usage())


def test_unknown_backend_names_the_field():
  cfg = factory.local_config()
  cfg.backend = "torch"
  with pytest.raises(ValueError, match="config.llm.backend"):
    factory.LLMPool(cfg)


@pytest.mark.skipif(not (SHARED / "amazon").exists(), reason=f"real data absent at {SHARED}")
def test_amazon_api_variant_bills_the_llm_decider(make_server, tmp_path):
  server = make_server()
  config = _config("amazon")
  _point_at(config, server, tmp_path)
  config.data.path = str(SHARED / "amazon")
  task = registry.build(config)
  examples = task.splits["test"][:4]
  res = task.system.run(examples, task.system.default_config(), seed=0)
  assert res.num_failed == 0
  assert all(p["choice"] in ex["choices"] for ex, p in zip(examples, res.predictions))
  ledger = task.llm_pool.usage()["ledger"]
  assert set(ledger) == {"next_item_decider"}
  assert ledger["next_item_decider"]["calls"] == 4 and ledger["next_item_decider"]["cost_usd"] > 0
  task.system.run(examples, task.system.default_config(), seed=0)   # same requests: cached
  assert task.llm_pool.usage()["ledger"]["next_item_decider"]["cache_hits"] == 4


@pytest.mark.skipif(not (SHARED / "pubmedqa").exists(), reason=f"real data absent at {SHARED}")
def test_pubmedqa_api_variant_runs_both_llm_steps(make_server, tmp_path):
  server = make_server()
  config = _config("pubmedqa")
  _point_at(config, server, tmp_path)
  config.data.path = str(SHARED / "pubmedqa")
  config.system.context_models = ("tiny-llama",)
  config.system.solver_models = ("tiny-llama",)
  config.system.analyst_tokens = config.system.solver_tokens = 8
  task = registry.build(config)
  examples = task.splits["test"][:3]
  res = task.system.run(examples, task.system.default_config(), seed=0)
  assert res.num_failed == 0
  scores = task.system.evaluate(examples, res)
  assert np.all((scores == 0) | (scores == 1))
  ledger = task.llm_pool.usage()["ledger"]
  assert {"context_analyst", "problem_solver"} <= set(ledger)
  assert ledger["context_analyst"]["calls"] == 3 and ledger["problem_solver"]["completion_tokens"] > 0
