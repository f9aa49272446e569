"""Builds the STaRK task from an experiment config.

config.data.source: "geonames" (offline: questions over the GeoNames KB,
MiniLM first stage) or "release" (a stark-qa release folder at
config.data.path, with the reference's candidate files).
"""

from __future__ import annotations

from absl import logging

from optimas_jax.llm.factory import LLMPool
from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.base import Task
from optimas_jax.tasks.pubmedqa.task import limit_splits
from optimas_jax.tasks.stark import release
from optimas_jax.tasks.stark import system as stark

SOURCES = ("geonames", "release")


def load_splits(data_config, cache_dir: str | None) -> dict[str, list[dict]]:
  if data_config.source not in SOURCES:
    raise ValueError(f"config.data.source={data_config.source!r}: choose one of {SOURCES}")
  if data_config.source == "release":
    loaded = release.load(data_config.path or None, data_config.on_error)
    if loaded.report.rows_skipped:
      logging.warning("stark release: %s", loaded.report)
      for err in loaded.report.errors[:20]:
        logging.warning("  skipped: %s", err)
    return limit_splits(loaded.splits, data_config.limit)
  from optimas_jax.tasks.embedding import Embedder
  from optimas_jax.tasks.stark import data
  sizes = {"train": data_config.train, "val": data_config.val, "test": data_config.test}
  return data.geonames_splits(sizes, data_config.seed, data_config.num_candidates,
                              Embedder(cache_dir=cache_dir), data_config.force_gold)


def build(config) -> Task:
  s = config.system
  splits = load_splits(config.data, s.cache_dir or None)
  for name, rows in splits.items():
    logging.info("stark %s: %d queries, first-stage recall %.3f, first-stage MRR %.3f", name,
                 len(rows), stark.first_stage_recall(rows, None), stark.first_stage_mrr(rows, None))
  pool = LLMPool(config.llm)
  scorer = stark.LikelihoodScorer(pool.get(s.scorer_model or None), s.max_info_chars)
  system = stark.build_system(scorer, (s.relation_weight, s.text_weight), tuple(s.weight_range))
  proposer = pool.get(s.proposer or None)
  return Task(system=system, splits=splits, llm=pool.get(s.scorer_model or None), llm_pool=pool,
              hints={"relation_scorer": stark.RELATION_HINTS, "text_scorer": stark.TEXT_HINTS},
              complete=llm_calls.completer(proposer), extra_metrics=dict(stark.EXTRA_METRICS))
