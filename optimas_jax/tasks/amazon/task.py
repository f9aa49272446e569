"""Builds the Amazon next-item task from an experiment config."""

from __future__ import annotations

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

