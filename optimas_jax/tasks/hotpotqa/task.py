"""Builds the HotpotQA task from an experiment config."""

from __future__ import annotations

from optimas_jax.llm.factory import LLMPool
from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.base import Task
from optimas_jax.tasks.data import hotpotqa as hotpot_data
from optimas_jax.tasks.hotpotqa import system as hotpot
from optimas_jax.tasks.pubmedqa.task import limit_splits


def build(config) -> Task:
  loaded = hotpot_data.load(config.data.path or None, config.data.on_error,
                            config.data.train_fraction, config.data.val_fraction)
  splits = {name: [{**ex, "paragraphs": hotpot.paragraphs(ex)} for ex in rows]
            for name, rows in limit_splits(loaded.splits, config.data.limit).items()}
  pool = LLMPool(config.llm)
  llm = pool.get()
  system = hotpot.build_system(llm, config.system.temperature, dict(config.system.max_tokens))
  return Task(system=system, splits=splits, llm=llm, llm_pool=pool, hints=hotpot.HINTS,
              complete=llm_calls.completer(pool.get(config.system.proposer or None)),
              extra_metrics={"exact_match": hotpot.exact_match,
                             "gold_recall": hotpot.gold_recall})
