"""Builds the GeoQA-hop task (tasks/geo/hop.py) from an experiment config."""

from __future__ import annotations

import jax.numpy as jnp

from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.base import Task, TextPolicy
from optimas_jax.tasks.geo import hop

WRITER_HINTS = (
    "Name the country the passage is about.",
    "Write the country's name and the word currency.",
    "Do not repeat the question.",
    "Reply with keywords only, no full sentence.",
)


WRITER_VARIABLES = ("lora", "prompt")


def validate(config) -> None:
  """Fields checked before SmolLM2 loads."""
  variable = config.system.get("writer_variable")
  if variable not in WRITER_VARIABLES:
    raise ValueError(f"config.system.writer_variable={variable!r}; choose one of "
                     f"{WRITER_VARIABLES}")
  if variable == "lora" and config.system.lora_rank < 1:
    raise ValueError(f"config.system.lora_rank={config.system.lora_rank}; use >= 1")


def build(config) -> Task:
  from optimas_jax.llm.local import load_local_llm
  llm = load_local_llm(config.system.llm, jnp.dtype(config.system.llm_dtype))
  res = hop.load_resources(llm)
  variable = config.system.writer_variable
  adapter_init = None
  if variable == "lora":
    from optimas_jax.models import lora
    lora_config = lora.LoraConfig(rank=config.system.lora_rank, alpha=config.system.lora_alpha,
                                  targets=tuple(config.system.lora_targets))
    base = llm.generator.params
    lora_config.validate(base)          # a bad rank or target fails before any work
    adapter_init = lambda seed: lora.init_adapter(lora_config, base, seed)
  system = hop.build_system(res, variable, config.system.max_new_tokens,
                            config.system.propose_temperature, adapter_init)
  splits = hop.make_splits({"train": config.data.train, "val": config.data.val,
                            "test": config.data.test}, config.data.seed)
  policies = {}
  if variable == "lora":
    policies["query_writer"] = TextPolicy(llm, hop.writer_requests, hop.query_from_text,
                                          config.system.max_new_tokens)
  return Task(system=system, splits=splits, hints={"query_writer": WRITER_HINTS},
              policies=policies, complete=llm_calls.completer(llm, 32),
              extra_metrics={"retrieval_hit": hop.retrieval_hit}, llm=llm)
