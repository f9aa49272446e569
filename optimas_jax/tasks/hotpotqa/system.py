"""HotpotQA (distractor setting): the paper's five-component system.

  question_rewriter (prompt) -> info_extractor (prompt) -> retriever
  (k, query: hyperparameters) -> hint_generator (prompt) -> answer_generator
  (prompt)

The retriever ranks the question's own 10 context paragraphs (2 gold, 8
distractors) by BM25 on the extracted keywords; the reference queried a
ColBERT server over Wikipedia abstracts, which is not reachable offline.
Metric: token F1 of the short answer (exact match beside it).
"""

from __future__ import annotations

import re

import numpy as np
from rank_bm25 import BM25Okapi

from optimas_jax import system as osys
from optimas_jax.tasks import llm_calls, metrics

REWRITER_PROMPT = "Rephrase the question."
EXTRACTOR_PROMPT = "Extract keywords from the query to retrieve relevant content."
HINT_PROMPT = "Generate useful hints to answer the query."
ANSWER_PROMPT = "Given some hints, directly answer the query with a short answer for the query."
_TOKEN = re.compile(r"[a-z0-9]+")
_PREFIX = re.compile(r"^\s*(short answer|answer|rewritten query|search keywords|hints)\s*:\s*",
                     re.IGNORECASE)

HINTS = {
    "question_rewriter": ("Keep every name and date from the question.",
                          "Reply with one question only."),
    "info_extractor": ("Reply with the names of people, places and works only.",
                       "Separate keywords with commas."),
    "hint_generator": ("Quote the sentence that answers the query.",
                       "Name the entity that links the two paragraphs."),
    "answer_generator": ("Reply with at most five words.", "Do not repeat the question.",
                         "For yes/no questions reply yes or no."),
}


def tokens(text: str) -> list[str]:
  return _TOKEN.findall(text.lower())


def paragraphs(example: dict) -> list[str]:
  ctx = example["context"]
  return [f"{t}: {' '.join(s).strip()}" for t, s in zip(ctx["title"], ctx["sentences"])]


def clean_reply(text: str) -> str:
  """The first non-empty line without a field prefix ("Short Answer: ...")."""
  for line in text.splitlines():
    line = _PREFIX.sub("", line).strip()
    if line:
      return line
  return ""


def rank_paragraphs(query: str, paras: list[str]) -> list[int]:
  bm25 = BM25Okapi([tokens(p) or ["_"] for p in paras])
  scores = bm25.get_scores(tokens(query) or ["_"])
  return [int(j) for j in np.argsort(-scores, kind="stable")]


def make_components(llm, temperature: float, max_tokens: dict) -> list[osys.Component]:

  def llm_step(out_field, user_of, tokens_key, temp):
    def call(inputs, prompt, rng):
      texts = llm_calls.chat(llm, prompt, [user_of(x) for x in inputs], max_tokens[tokens_key],
                             temp, rng)
      return [{out_field: clean_reply(t) or t.strip()} for t in texts]
    return call

  def retrieve(inputs, hp, rng):
    out = []
    for x in inputs:
      paras = x["paragraphs"]
      query = x["search_keywords"] if hp["query"] == "keywords" else \
          f"{x['search_keywords']} {x['question']}"
      top = rank_paragraphs(query, paras)[: hp["k"]]
      out.append({"retrieve_content": [paras[j] for j in top]})
    return out

  def content(x):
    return "\n".join(x["retrieve_content"])

  stochastic = temperature > 0
  return [
      osys.Component("question_rewriter", "Rephrase the question.", ["question"],
                     ["rewritten_query"],
                     llm_step("rewritten_query", lambda x: f"Query: {x['question']}", "rewrite",
                              temperature),
                     osys.Prompt(REWRITER_PROMPT), deterministic=not stochastic),
      osys.Component("info_extractor",
                     "Extract keywords from the query to retrieve relevant content.",
                     ["rewritten_query"], ["search_keywords"],
                     llm_step("search_keywords", lambda x: f"Query: {x['rewritten_query']}",
                              "keywords", temperature),
                     osys.Prompt(EXTRACTOR_PROMPT), deterministic=not stochastic),
      osys.Component("retriever", "Retrieve the question's paragraphs that match the keywords.",
                     ["search_keywords", "question", "paragraphs"], ["retrieve_content"], retrieve,
                     osys.Hyperparameters({"k": osys.Choice((1, 2, 3, 5, 10)),
                                           "query": osys.Choice(("keywords",
                                                                 "keywords+question"))},
                                          {"k": 1, "query": "keywords"}),   # reference: k=1
                     deterministic=True),
      osys.Component("hint_generator", "Generate useful hints to answer the query.",
                     ["rewritten_query", "retrieve_content"], ["hints"],
                     llm_step("hints", lambda x: (f"Query: {x['rewritten_query']}\n"
                                                  f"Retrieved Information: {content(x)}"),
                              "hints", temperature),
                     osys.Prompt(HINT_PROMPT), deterministic=not stochastic),
      osys.Component("answer_generator",
                     "Given some hints, directly answer the query with a short answer.",
                     ["rewritten_query", "hints"], ["answer"],
                     llm_step("answer", lambda x: (f"Query: {x['rewritten_query']}\n"
                                                   f"Hints: {x['hints']}"), "answer", 0.0),
                     osys.Prompt(ANSWER_PROMPT), deterministic=True),
  ]


def build_system(llm, temperature: float = 0.6, max_tokens: dict | None = None) -> osys.System:
  max_tokens = dict(max_tokens or {"rewrite": 32, "keywords": 16, "hints": 48, "answer": 16})
  metric = osys.Metric(lambda ex, pred: metrics.token_f1(pred["answer"], ex["answer"]),
                       ["answer"], name="f1", failure_value=0.0)
  return osys.System(make_components(llm, temperature, max_tokens),
                     ["question", "paragraphs"], metric)


def exact_match(examples, result) -> float:
  return float(np.mean([0.0 if p is None else metrics.exact_match(p["answer"], ex["answer"])
                        for ex, p in zip(examples, result.predictions)]))


def gold_recall(examples, result) -> float:
  """Share of gold (supporting) paragraphs the retriever returned."""
  hits = []
  for ex, t in zip(examples, result.traces):
    step = t.steps.get("retriever")
    gold = set(ex["supporting_facts"]["title"])
    got = step.outputs["retrieve_content"] if step else []
    hits.append(sum(any(p.startswith(f"{g}: ") for p in got) for g in gold) / max(len(gold), 1))
  return float(np.mean(hits))
