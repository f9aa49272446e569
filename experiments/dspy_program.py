"""Optimas on an existing DSPy program, written back in DSPy's own save format.

  python experiments/dspy_program.py --workdir=runs/dspy_program
  python experiments/dspy_program.py --workdir=/tmp/dspy_smoke --method=coordinate --iterations=2

Needs the `peers` extra (pip install -e '.[peers]'). The program is plain
DSPy: a query rewriter and an answerer (two dspy.Predict) around a BM25
retriever over the GeoQA corpus (GeoNames facts). Its LM is SmolLM2-135M
served by `optimas_jax.serve` on loopback (started here, in-process) and
called through LiteLLM like any OpenAI-compatible endpoint; `--base_url`
uses a server you started yourself.

`adapt.dspy.from_dspy` turns the program into an optimas_jax System
(one component per predictor, its instruction a Prompt variable; the
retriever is an extra component), the Optimas loop optimizes it (LRF on
MiniLM by default), and the optimized instructions are written into the
program and saved with `program.save(<workdir>/program.json)`, which
`RewriteRetrieveAnswer().load(path)` reads back. Every call stays on
loopback (the run refuses anything else).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the loop's run and program.json go.")
_METHOD = flags.DEFINE_string("method", "optimas", "optimas | optimas_static | coordinate")
_ITERATIONS = flags.DEFINE_integer("iterations", 4, "Optimas iterations.")
_BUDGET = flags.DEFINE_integer("budget_runs", 0, "Cap on system runs (0: none).")
_BASE_URL = flags.DEFINE_string("base_url", "", "A running optimas_jax.serve (default: start one).")
_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct", "The served model.")
flags.mark_flags_as_required(["workdir"])


def build_program(dspy, retrieve):
  """The DSPy program a user already has: rewrite -> retrieve -> answer."""

  class RewriteRetrieveAnswer(dspy.Module):
    def __init__(self):
      super().__init__()
      self.rewrite = dspy.Predict(dspy.Signature(
          "question -> query", "Rewrite the question as a short search query."))
      self.answer = dspy.Predict(dspy.Signature(
          "question, passages: list[str] -> answer",
          "Answer the question using the passages. Reply with the answer only."))

    def forward(self, question):
      query = self.rewrite(question=question).query
      return self.answer(question=question, passages=retrieve(query))

  return RewriteRetrieveAnswer


def make_retriever(k: int = 2):
  """BM25 over the GeoQA corpus: query -> the top-k passages."""
  import numpy as np
  from rank_bm25 import BM25Okapi
  from optimas_jax.tasks.geo import data
  from optimas_jax.tasks.geo.system import content_words
  passages = [p["text"] for p in data.corpus()]
  bm25 = BM25Okapi([content_words(p) or ["_"] for p in passages])

  def retrieve(query: str) -> list[str]:
    scores = bm25.get_scores(content_words(query) or ["_"])
    return [passages[j] for j in np.argsort(-scores, kind="stable")[:k]]

  return retrieve


def loop_config():
  config = common.optimas_config()
  config.task = "geoqa"                 # checked against the registry; the Task is the program's
  config.method = _METHOD.value
  config.seed = 0
  common.use_minilm_lrf(config, max_len=256, buckets=(64, 128, 256))
  config.lrf.list_items = "first_sentence"
  config.lrf.initial_epochs = 3
  config.collect.num_candidates = 3
  config.collect.num_rollouts = 2
  config.collect.initial_examples = 8
  config.loop.iterations = _ITERATIONS.value
  config.loop.examples_per_iteration = 6
  config.loop.selection = "round_robin"
  config.loop.budget_runs = _BUDGET.value
  config.optimizers.prompt_llm_proposals = 1
  config.optimizers.prompt_edit_proposals = 2
  return config


def main(argv):
  del argv
  from optimas_jax import system as osys
  from optimas_jax.adapt import dspy as dspy_program
  from optimas_jax.peers import env
  from optimas_jax.peers.served import ServedModel
  from optimas_jax.tasks import llm_calls, metrics
  from optimas_jax.tasks.geo import data

  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  dspy = env.require("dspy", workdir, "experiments/dspy_program.py")
  if _BASE_URL.value:
    served = ServedModel(_BASE_URL.value, _MODEL.value)
  else:
    from optimas_jax.llm.local import load_local_llm
    served = ServedModel.start(load_local_llm(_MODEL.value), _MODEL.value)
  logging.info("served model at %s", served.base_url)
  # The decoding of GeoQA's components: the writer samples (0.7), the reader is greedy.
  lm = served.dspy_lm(workdir, temperature=0.0, max_tokens=16)

  retrieve = make_retriever()
  program = build_program(dspy, retrieve)()
  program.rewrite.lm = served.dspy_lm(workdir, temperature=0.7, top_p=0.95, max_tokens=16)
  program.answer.lm = lm

  def metric(example, prediction, trace=None):
    del trace
    return metrics.token_f1(prediction.answer, example.answer)

  retriever = osys.Component(
      "retriever", "Retrieve passages for the query from the corpus.", ["query"], ["passages"],
      lambda inputs, _, rng: [{"passages": retrieve(x["query"])} for x in inputs],
      deterministic=True)
  bridge = dspy_program.from_dspy(program, metric, extra_components=[retriever])
  splits = data.make_splits({"train": 16, "val": 8, "test": 16}, seed=0)
  examples = {s: [dspy.Example(**row).with_inputs("question") for row in rows]
              for s, rows in splits.items()}
  from optimas_jax.llm.openai_compat import OpenAICompatLLM
  proposer = OpenAICompatLLM(served.model, served.base_url, api_key="local", cache=False)

  with env.LoopbackOnly():
    summary = bridge.optimize(loop_config(), workdir / "loop", examples["train"],
                              examples["val"], examples["test"],
                              complete=llm_calls.completer(proposer, 32),
                              save_to=workdir / "program.json")
  served.close()
  report = {k: summary[k] for k in ("method", "test", "val", "iterations", "budget_runs",
                                    "wall_s")}
  report.update(parse=summary["detail"]["parse"],
                instructions={n: p.signature.instructions
                              for n, p in program.named_predictors()},
                saved=str(workdir / "program.json"))
  print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
  app.run(main)
