"""Builds the PubMedQA task from an experiment config."""

from __future__ import annotations

from optimas_jax.llm.factory import LLMPool
from optimas_jax.tasks import data as data_lib
from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.base import Task
from optimas_jax.tasks.embedding import Embedder
from optimas_jax.tasks.pubmedqa import system as pubmed


def limit_splits(splits: dict, limits) -> dict:
  """The first `limits[split]` examples of each split, in file order (0: all)."""
  out = {}
  for name, rows in splits.items():
    n = int(limits.get(name, 0) or 0)
    if n < 0:
      raise ValueError(f"config.data.limit.{name}={n}; use 0 for all rows or a positive count")
    out[name] = rows[:n] if n else rows
  return out


def build(config) -> Task:
  loaded = data_lib.load("pubmedqa", config.data.path or None, config.data.on_error)
  splits = limit_splits(loaded.splits, config.data.limit)
  pool = LLMPool(config.llm)
  s = config.system
  embedder = Embedder(cache_dir=s.cache_dir or None) if pubmed.EXTRACT_MODEL in s.context_models \
      else None
  system = pubmed.build_system(pool, embedder, s.context_models, s.solver_models,
                               s.analyst_tokens, s.solver_tokens, s.analyst_temperature)
  proposer = pool.get(s.proposer or None)
  return Task(system=system, splits=splits, llm=pool.get(), llm_pool=pool,
              hints={"context_analyst": pubmed.ANALYST_HINTS,
                     "problem_solver": pubmed.SOLVER_HINTS},
              complete=llm_calls.completer(proposer),
              extra_metrics={"answered": pubmed.answered_rate})
