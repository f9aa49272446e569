"""LLM backends from an experiment config: the local JAX model or an API.

  config.llm.backend = "local"    # SmolLM2 in JAX, offline
  config.llm.backend = "openai"   # any OpenAI-compatible server (OpenAI, vLLM, SGLang, Ollama,
                                  # `python -m optimas_jax.serve`)

Model names route to a base URL and a key variable by prefix
(`config.llm.routes`), so one run can mix providers (the PubMedQA model
selection set spans OpenAI and Anthropic models). Keys are read from the
environment by the backend and never stored in the config.
"""

from __future__ import annotations

import ml_collections

# $ per 1M (prompt, completion) tokens, list prices of the paper's models.
PRICES = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-3.5-turbo-0125": (0.50, 1.50),
    "gpt-4-turbo": (10.00, 30.00),
    "claude-3-5-haiku-20241022": (0.80, 4.00),
    "claude-3-5-sonnet-20241022": (3.00, 15.00),
    "claude-3-7-sonnet-20250219": (3.00, 15.00),
}


def local_config(model: str = "smollm2-135m-instruct", dtype: str = "float32"):
  return ml_collections.ConfigDict(dict(
      backend="local", model=model, dtype=dtype, max_context=2048,
      base_url="", api_key_env="OPENAI_API_KEY", max_concurrency=8, timeout_s=60.0,
      max_retries=4,
      cache="default",   # API response cache: "default" ($OPTIMAS_LLM_CACHE or ~/.cache), a path, or ""
      # Tuples, not dicts: model names contain dots, which ConfigDict keys cannot.
      routes=(),     # ((model name prefix, base URL, API key variable), ...)
      prices=(),     # ((model, $ per 1M prompt tokens, $ per 1M completion tokens), ...)
  ))


def api_config(model: str = "gpt-4o-mini"):
  """The paper's setting: OpenAI models at $OPENAI_BASE_URL, Anthropic's at its compatible API."""
  cfg = local_config(model)
  cfg.backend = "openai"
  cfg.routes = (("claude-", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),)
  cfg.prices = tuple((k, *v) for k, v in PRICES.items())
  return cfg


class LLMPool:
  """One backend object per model name, all sharing one ledger (cost per component)."""

  def __init__(self, cfg):
    if cfg.backend not in ("local", "openai"):
      raise ValueError(f"config.llm.backend={cfg.backend!r}: choose 'local' or 'openai'")
    from optimas_jax.llm import ledger as ledger_lib
    self.cfg = cfg
    self.ledger = ledger_lib.Ledger({m: (p, c) for m, p, c in cfg.prices})
    self._llms = {}
    self._pending: dict[str, dict] = {}   # loaded states of models not built yet

  def get(self, model: str | None = None):
    model = model or self.cfg.model
    if model not in self._llms:
      llm = self._build(model)
      if model in self._pending:
        llm.load_state_dict(self._pending.pop(model))
      self._llms[model] = llm
    return self._llms[model]

  def state_dict(self) -> dict:
    """Counters to resume from (JSON): the ledger and each model's usage and cache counters.

    Models loaded but not built yet keep their state, so a save before the
    first call loses nothing. No URLs, no keys.
    """
    models = dict(self._pending)
    models.update({m: llm.state_dict() for m, llm in self._llms.items()})
    return {"ledger": self.ledger.state_dict(), "models": models}

  def load_state_dict(self, state: dict) -> None:
    """Restores ``state_dict()``; a model built later gets its counters when built.

    Local models are shared per process (``load_local_llm`` caches them), so
    their usage is set on the shared object.
    """
    unknown = sorted(set(state) - {"ledger", "models"})
    if unknown:
      raise ValueError(f"LLMPool state has unknown fields {unknown}; expected 'ledger' and "
                       "'models' (a dict from LLMPool.state_dict())")
    self.ledger.load_state_dict(state.get("ledger", {}))
    self._pending = {}
    for model, llm_state in state.get("models", {}).items():
      if model in self._llms:
        self._llms[model].load_state_dict(llm_state)
      else:
        self._pending[model] = llm_state

  def reset_usage(self) -> None:
    """Zero every counter (a new run in the same process, e.g. the compare harness)."""
    self.load_state_dict({"ledger": {"entries": {}}, "models": {m: {} for m in self._llms}})

  def _build(self, model: str):
    cfg = self.cfg
    if cfg.backend == "local":
      import jax.numpy as jnp
      from optimas_jax.llm.local import load_local_llm
      return load_local_llm(model, jnp.dtype(cfg.dtype), cfg.max_context)
    from optimas_jax.llm.openai_compat import OpenAICompatLLM
    base_url, key_env = cfg.base_url or None, cfg.api_key_env
    for prefix, url, env in cfg.routes:
      if model.startswith(prefix):
        base_url, key_env = url, env
    return OpenAICompatLLM(model, base_url, api_key_env=key_env,
                           max_concurrency=cfg.max_concurrency, timeout_s=cfg.timeout_s,
                           max_retries=cfg.max_retries,
                           cache=True if cfg.cache == "default" else (cfg.cache or False),
                           ledger=self.ledger)

  def usage(self) -> dict:
    """Tokens per model and (API backends) calls, tokens and cost per component."""
    out = {"models": {m: llm.usage.as_dict() for m, llm in self._llms.items()}}
    if self.cfg.backend == "openai":
      out["ledger"] = self.ledger.as_dict()
    return out
