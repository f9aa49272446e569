"""Builds the GeoQA task for the Optimas loop from an experiment config."""

from __future__ import annotations

import jax.numpy as jnp

from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.base import PolicyAdapter, Task
from optimas_jax.tasks.geo import data
from optimas_jax.tasks.geo import system as geo


def build(config) -> Task:
  llm = None
  if config.system.llm:
    from optimas_jax.llm.local import load_local_llm
    llm = load_local_llm(config.system.llm, jnp.dtype(config.system.llm_dtype))
  res = geo.load_resources(llm, cache_dir=config.system.cache_dir or None)
  system = geo.build_system(res, config.system.writer_temperature)
  splits = data.make_splits({"train": config.data.train, "val": config.data.val,
                             "test": config.data.test}, config.data.seed)

  policies = {"evidence_selector": PolicyAdapter(
      features=lambda inputs: geo.selector_features(res, inputs),
      apply=geo.selector_logits, render=geo.render_selection, picks=geo.EVIDENCE_KEEP)}
  return Task(system=system, splits=splits, hints={"query_writer": geo.WRITER_HINTS},
              policies=policies, complete=llm_calls.completer(llm, 32) if llm is not None else None,
              extra_metrics={"exact_match": geo.exact_match}, llm=llm)
