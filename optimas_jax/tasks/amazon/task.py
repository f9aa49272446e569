"""Builds the Amazon next-item task from an experiment config."""

from __future__ import annotations

import functools

from optimas_jax.tasks import data as data_lib
from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.amazon import system as amazon
from optimas_jax.tasks.base import PolicyAdapter, Task
from optimas_jax.tasks.embedding import Embedder


def build(config) -> Task:
  loaded = data_lib.load("amazon", config.data.path or None, config.data.on_error)
  splits = loaded.splits
  embedder = Embedder(cache_dir=config.system.cache_dir or None)
  titles = sorted({t for s in splits.values() for ex in s for t in ex["sequence"] + ex["choices"]})
  embedder.preload(titles, "amazon-titles")
  pool = llm = None
  if config.system.llm_decider:
    from optimas_jax.llm.factory import LLMPool
    pool = LLMPool(config.llm)
    llm = pool.get()
  system = amazon.build_system(embedder, llm)
  policies = {"candidate_profiler": PolicyAdapter(
      features=lambda inputs: amazon.candidate_features(embedder, inputs),
      apply=amazon.profiler_logits, render=amazon.render_ranking)}
  return Task(system=system, splits=splits, policies=policies, llm=llm, llm_pool=pool,
              hints={"next_item_decider": amazon.DECIDER_HINTS} if llm is not None else {},
              complete=llm_calls.completer(llm) if llm is not None else None)



def build_llm(config) -> Task:
  """The paper's shape: analyzer and profiler are SmolLM2 LoRA policies (llm_system.py)."""
  import jax.numpy as jnp
  from optimas_jax.llm.local import load_local_llm
  from optimas_jax.models import lora
  from optimas_jax.tasks.amazon import llm_system
  from optimas_jax.tasks.base import TextPolicy
  # Bad settings fail before the data and the LLM load.
  # Defaults live in the experiment file (experiments/amazon.py), not here.
  sizes = llm_system.PromptSizes(config.system.session_items, config.system.title_chars)
  variable = config.system.policy_variable
  llm_system.check_variable(variable)
  loaded = data_lib.load("amazon", config.data.path or None, config.data.on_error)
  splits = {name: rows[:config.data.get(f"max_{name}", len(rows)) or len(rows)]
            for name, rows in loaded.splits.items()}
  embedder = Embedder(cache_dir=config.system.cache_dir or None)
  llm = load_local_llm(config.system.llm, jnp.dtype(config.system.llm_dtype))
  base = llm.generator.params
  lora_config = lora.LoraConfig(rank=config.system.lora_rank, alpha=config.system.lora_alpha,
                                targets=tuple(config.system.lora_targets))
  lora_config.validate(base)
  names = ("session_analyzer", "candidate_profiler")
  inits = {n: (lambda seed: lora.init_adapter(lora_config, base, seed)) for n in names}
  tokens = {"session_analyzer": config.system.analyzer_tokens,
            "candidate_profiler": config.system.profiler_tokens}
  system = llm_system.build_system(embedder, llm, inits, tokens,
                                   config.system.propose_temperature, variable, sizes)
  analyzer_requests = functools.partial(llm_system.analyzer_requests, sizes=sizes)
  profiler_requests = functools.partial(llm_system.profiler_requests, sizes=sizes)
  if variable == "prompt":       # prompt optimization of the same two stages
    return Task(system=system, splits=splits, llm=llm, hints=llm_system.PROMPT_HINTS,
                complete=llm_calls.completer(llm, 32))
  policies = {
      "session_analyzer": TextPolicy(llm, analyzer_requests,
                                     llm_system.analyzer_output, tokens["session_analyzer"]),
      "candidate_profiler": TextPolicy(llm, profiler_requests,
                                       llm_system.profiler_output, tokens["candidate_profiler"])}
  return Task(system=system, splits=splits, policies=policies, llm=llm)
