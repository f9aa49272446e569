"""A three-component geography QA system built from the core, run end to end.

linker (hyperparameters) -> retriever (hyperparameters) -> reader (model
choice). It exercises everything the core offers, with no model weights:
the DAG, batch calls, a bounded thread pool, per-example failures, the
metric, configuration overrides and the system-run counters. The Optimas
quickstart (experiments/geoqa.py) replaces it as the main job.
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
from absl import logging

from optimas_jax import system as osys
from optimas_jax.tasks import metrics
from optimas_jax.tasks.geo import facts

ATTRIBUTES = {"capital": "What is the capital of {}?",
              "currency": "What currency is used in {}?",
              "continent": "On which continent is {}?"}
PATTERNS = {"capital": r"Its capital is ([^.]+)\.",
            "currency": r"The currency of .+? is the ([^.]+)\.",
            "continent": r"is a country in ([^.]+)\."}


def make_questions(n: int, seed: int) -> list[dict]:
  rng = np.random.default_rng(seed)
  rows = facts.countries()
  out = []
  for idx in rng.choice(len(rows), size=n, replace=False):
    c = rows[int(idx)]
    attr = list(ATTRIBUTES)[int(rng.integers(len(ATTRIBUTES)))]
    out.append({"question": ATTRIBUTES[attr].format(c.name), "answer": getattr(c, attr)})
  return out


def _words(text: str) -> set[str]:
  return set(metrics.normalize_answer(text).split())


def build_system() -> osys.System:
  countries = facts.countries()
  names = [c.name for c in countries]
  corpus = [facts.passage(c) for c in countries]
  corpus_words = [_words(p) for p in corpus]

  def link(inputs, variable, rng):
    out = []
    for x in inputs:
      if variable["match"] == "exact":
        hits = [n for n in names if n in x["question"]]
      else:
        q = _words(x["question"])
        hits = [n for n in names if _words(n) <= q]
      # Longest name wins ("Niger" vs "Nigeria"); no hit is this example's failure.
      out.append({"entity": max(hits, key=len)} if hits
                 else LookupError(f"no country named in {x['question']!r}"))
    return out

  def retrieve(x, variable, rng):
    query = _words(x["question"]) | (_words(x["entity"]) if variable["use_entity"] else set())
    overlap = np.array([len(query & w) for w in corpus_words])
    top = np.argsort(-overlap, kind="stable")[: variable["k"]]
    return {"passages": [corpus[i] for i in top]}

  def read(inputs, variable, rng):
    out = []
    for x in inputs:
      attr = next(a for a, q in ATTRIBUTES.items() if q.split("{}")[0] in x["question"])
      texts = x["passages"][:1] if variable == "first_passage" else x["passages"]
      found = [m.group(1) for t in texts if x["entity"] in t
               for m in [re.search(PATTERNS[attr], t)] if m]
      out.append({"prediction": found[0] if found else ""})
    return out

  components = [
      osys.Component("linker", "Find the country the question is about.", ("question",),
                     ("entity",), link,
                     osys.Hyperparameters({"match": osys.Choice(("exact", "words"))},
                                          {"match": "words"})),
      osys.Component("retriever", "Retrieve passages about the question.",
                     ("question", "entity"), ("passages",),
                     osys.per_example(retrieve, max_workers=4),
                     osys.Hyperparameters({"k": osys.Choice((1, 3, 5)),
                                           "use_entity": osys.Choice((False, True))},
                                          {"k": 1, "use_entity": False})),
      osys.Component("reader", "Read the answer from the passages.",
                     ("question", "entity", "passages"), ("prediction",), read,
                     osys.ModelChoice(("first_passage", "all_passages"), "first_passage")),
  ]
  metric = osys.Metric(lambda ex, pred: metrics.token_f1(pred["prediction"], ex["answer"]),
                       ("prediction",), name="f1")
  return osys.System(components, ["question"], metric)


def run(config, workdir: str) -> dict:
  """Evaluates the default configuration and a sweep of overrides; writes results."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  system = build_system()
  examples = make_questions(config.num_examples, config.seed)
  base = system.default_config()
  variants = {"default": base}
  for k in (3, 5):
    for use_entity in (False, True):
      variants[f"k={k},use_entity={use_entity},reader=all"] = base.override(
          retriever={"k": k, "use_entity": use_entity}, reader="all_passages")
  results = {}
  for name, cfg in variants.items():
    res = system.run(examples, cfg, seed=config.seed)
    scores = system.evaluate(examples, res)
    results[name] = {"f1": float(scores.mean()), "failed": res.num_failed}
    logging.info("%-40s F1 %.3f  failed %d", name, scores.mean(), res.num_failed)
  best = max(results, key=lambda n: results[n]["f1"])
  variants[best].save(workdir / "best_config")
  summary = {"results": results, "best": best, "counters": system.counters.snapshot()}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  print(json.dumps({"best": best, **results[best],
                    "system_runs": summary["counters"]["system_runs"]}))
  return summary
