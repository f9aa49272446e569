"""PubMedQA: the paper's two-stage model-selection system.

  context_model_selector (model choice) -> context_analyst (prompt)
    -> solver_model_selector (model choice) -> problem_solver (prompt)

Metric: accuracy of the yes / no / maybe read from the solver's final
"Answer: ..." line. The reference takes the first "yes|no|maybe" anywhere in
the reply (so "No doubt ... Answer: yes" scores "no"); `parse_answer` reads
the last "Answer:" line, with word boundaries.

Model names are resolved by the task's LLM pool, plus two local-only models:
"minilm-extract" (the analyst keeps the context sentences closest to the
question, by MiniLM) and "<llm>:choice" (the solver answers by comparing the
LLM's likelihood of " yes", " no" and " maybe" after "Answer:").
"""

from __future__ import annotations

import re

import numpy as np

from optimas_jax import system as osys
from optimas_jax.tasks import llm_calls

LABELS = ("yes", "no", "maybe")
SYSTEM_PROMPT = "You are a scientist."
ANALYST_PROMPT = ("You are supposed to summarize the key information from the given context to "
                  "answer the provided question.")
SOLVER_PROMPT = ("You are supposed to provide a solution to a given problem based on the "
                 "provided summary.")
FORMAT_PROMPT = ("Always conclude the last line of your response should be of the following "
                 "format: 'Answer: $VALUE' (without quotes) where VALUE is either 'yes' or 'no' "
                 "or 'maybe'.")
EXTRACT_MODEL = "minilm-extract"
CHOICE_SUFFIX = ":choice"
EXTRACT_SENTENCES = 3

_ANSWER_LINE = re.compile(r"^\W*answer\W*:\W*(yes|no|maybe)\b", re.IGNORECASE)
_ANSWER_ANYWHERE = re.compile(r"\banswer\W*:\W*(yes|no|maybe)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")

ANALYST_HINTS = (
    "Quote the numbers and the direction of each reported effect.",
    "Say whether the results support, contradict or leave open the question.",
    "Keep it under three sentences.",
)
SOLVER_HINTS = (
    "Answer yes when the results support the question, no when they contradict it.",
    "Answer maybe only when the evidence is mixed or inconclusive.",
    "Think about the conclusion of the study first.",
)


def parse_answer(text: str) -> str | None:
  """The label of the last "Answer: yes|no|maybe" line (else the last such phrase), or None."""
  for line in reversed(text.strip().splitlines()):
    m = _ANSWER_LINE.match(line.strip())
    if m:
      return m.group(1).lower()
  found = _ANSWER_ANYWHERE.findall(text)
  return found[-1].lower() if found else None


def split_sentences(paragraphs: list[str]) -> list[str]:
  return [s.strip() for p in paragraphs for s in _SENTENCE.split(p) if s.strip()]


def analyst_user(prompt: str, x: dict) -> str:
  context = " ".join(x["context"])
  return (f"{prompt}\n\nHere is the given context:\n\"{context}\"\n\nProblem:\n\"{x['question']}\""
          "\n\nPlease summarize the relevant information from the context related to the question.")


def solver_user(prompt: str, x: dict) -> str:
  return (f"{prompt}\n\nProblem:\n\"{x['question']}\"\n\nHere is a summary of relevant "
          f"information:\n\"{x['summary']}\"\n\nPlease provide yes, no or maybe to the given "
          f"problem. {FORMAT_PROMPT}")


def _by_model(inputs, field: str) -> dict[str, list[int]]:
  groups: dict[str, list[int]] = {}
  for i, x in enumerate(inputs):
    groups.setdefault(x[field], []).append(i)
  return groups


def make_components(pool, embedder, context_models, solver_models, analyst_tokens: int,
                    solver_tokens: int, temperature: float) -> list[osys.Component]:

  def select(field):
    def call(inputs, model, rng):
      return [{field: model} for _ in inputs]
    return call

  def analyze(inputs, prompt, rng):
    out: list[dict | None] = [None] * len(inputs)
    for model, idx in _by_model(inputs, "context_analyst_model").items():
      batch = [inputs[i] for i in idx]
      if model == EXTRACT_MODEL:
        texts = []
        for x in batch:
          sents = split_sentences(x["context"])
          scores = embedder.embed(sents) @ embedder.embed([x["question"]])[0]
          keep = sorted(np.argsort(-scores)[:EXTRACT_SENTENCES])   # in document order
          texts.append(" ".join(sents[j] for j in keep))
      else:
        texts = llm_calls.chat(pool.get(model), SYSTEM_PROMPT,
                               [analyst_user(prompt, x) for x in batch], analyst_tokens,
                               temperature, rng.subset(idx))
      for i, t in zip(idx, texts):
        out[i] = {"summary": t}
    return out

  def solve(inputs, prompt, rng):
    out: list[dict | None] = [None] * len(inputs)
    for model, idx in _by_model(inputs, "problem_solver_model").items():
      batch = [inputs[i] for i in idx]
      users = [solver_user(prompt, x) for x in batch]
      if model.endswith(CHOICE_SUFFIX):
        llm = pool.get(model[: -len(CHOICE_SUFFIX)])
        requests = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": u}]
                    for u in users]
        logp = llm.option_logprobs(requests, [" " + label for label in LABELS], prefix="Answer:")
        texts = [f"Answer: {LABELS[int(np.argmax(row))]}" for row in logp]
      else:
        texts = llm_calls.chat(pool.get(model), SYSTEM_PROMPT, users, solver_tokens, 0.0)
      for i, t in zip(idx, texts):
        out[i] = {"answer": t}
    return out

  return [
      osys.Component("context_model_selector",
                     "Choose the model that summarizes the context for this question.",
                     ["question"], ["context_analyst_model"], select("context_analyst_model"),
                     osys.ModelChoice(tuple(context_models), context_models[0]),
                     deterministic=True),
      osys.Component("context_analyst",
                     "Summarize the key information from the context to answer the question.",
                     ["context", "question", "context_analyst_model"], ["summary"], analyze,
                     osys.Prompt(ANALYST_PROMPT), deterministic=temperature == 0),
      osys.Component("solver_model_selector",
                     "Choose the model that answers yes, no or maybe from the summary.",
                     ["question", "summary"], ["problem_solver_model"],
                     select("problem_solver_model"),
                     osys.ModelChoice(tuple(solver_models), solver_models[0]),
                     deterministic=True),
      osys.Component("problem_solver",
                     "Answer yes, no or maybe to the question from the summary, ending with "
                     "'Answer: <label>'.",
                     ["question", "summary", "problem_solver_model"], ["answer"], solve,
                     osys.Prompt(SOLVER_PROMPT), deterministic=True),
  ]


def accuracy(example: dict, prediction: dict) -> float:
  return float(parse_answer(prediction["answer"]) == example["groundtruth"])


def build_system(pool, embedder, context_models, solver_models, analyst_tokens: int = 96,
                 solver_tokens: int = 48, temperature: float = 0.0) -> osys.System:
  metric = osys.Metric(accuracy, ["answer"], name="accuracy", failure_value=0.0)
  return osys.System(make_components(pool, embedder, context_models, solver_models,
                                     analyst_tokens, solver_tokens, temperature),
                     ["question", "context"], metric)


def answered_rate(examples, result) -> float:
  """Share of examples whose reply has a parsable final answer (format adherence)."""
  return float(np.mean([p is not None and parse_answer(p["answer"]) is not None
                        for p in result.predictions]))
