"""STaRK: the paper's three-component reranker over each query's candidate entities.

  relation_scorer (prompt) ─┐
                            ├─> final_scorer (two aggregation weights) -> final_scores
  text_scorer (prompt) ─────┘

Each scorer gives every candidate a score in [0, 1] from the question and
the candidate's relations (relation_info) or properties (text_info); the
final scorer adds them to the first-stage similarity, as the reference's
FinalScorer does:

  final = emb_score + relation_weight * relation_score + text_weight * text_score

Metric: MRR of the gold answers in the candidates ranked by final score
(the reference's `mrr`); Hit@1 and Recall@20 are reported beside it.

The reference's scorers ask an API model for a JSON list of scores; a
135M model does not write one reliably, so the local scorer reads the
likelihood instead: the score of a candidate is the LLM's probability of
" Yes" after "Answer:", given the prompt (the optimizable variable), the
question and the candidate's information. One forward pass per candidate,
no decoding (`option_logprobs`; " No" is not scored, which would double the
cost). The scorer is deterministic, so its scores are memoised by exact
request text: re-running an unchanged prompt on a seen candidate costs
nothing.
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import numpy as np

from optimas_jax import system as osys
from optimas_jax.tasks import metrics

# Shorter than the reference's signatures: on a CPU every token of every
# candidate's prompt is paid for (a request of up to 127 tokens pads to 128).
RELATION_PROMPT = "Judge whether the entity's relations match the question."
TEXT_PROMPT = "Judge whether the entity's properties meet the requirements of the question."
RELATION_LABEL = "Relations"
TEXT_LABEL = "Properties"
ANSWER_PREFIX = "Answer:"
YES = " Yes"
RECALL_K = 20

# Sentences the prompt optimizer's edits (and preference collection) may add;
# none names an entity, so they fit any STaRK knowledge base.
RELATION_HINTS = (
    "Say Yes only when the entity is linked to the entity the question names.",
    "Check the relation types the question mentions first.",
    "The entity must be of the type the question asks for.",
    "Ignore numbers and descriptions; judge the relations only.",
)
TEXT_HINTS = (
    "Compare every number in the question with the entity's numbers.",
    "Say Yes only when every requirement in the question is met.",
    "The entity must be of the type the question asks for.",
    "Ignore the entity's relations; judge its properties only.",
)


def user_message(question: str, label: str, info: str, max_chars: int) -> str:
  if max_chars and len(info) > max_chars:
    info = info[:max_chars] + "..."
  return f"Question: {question}\n{label}: {info}\nDoes the entity fit the question? Yes or No?"


def chunk_sizes(n: int, largest: int = 32, smallest: int = 4) -> list[int]:
  """Power-of-two batch sizes from `largest` down to `smallest` covering n rows, largest
  first; the last may exceed what is left (it is padded), so few shapes compile."""
  sizes = []
  while n > 0:
    size = largest
    while size > n and size > smallest:
      size //= 2
    sizes.append(size)
    n -= size
  return sizes


class LikelihoodScorer:
  """P(" Yes" | prompt, question, candidate info) per candidate, memoised by request text
  (thread-safe)."""

  def __init__(self, llm, max_info_chars: int = 400):
    if not hasattr(llm, "option_logprobs"):
      raise ValueError(f"the STaRK scorers read likelihoods (option_logprobs), which the LLM "
                       f"backend {type(llm).__name__} does not provide; use a local model "
                       "(config.llm.backend='local')")
    self.llm = llm
    self.max_info_chars = max_info_chars
    self.likelihood_memo: dict[tuple[str, str], float] = {}
    self._lock = threading.Lock()

  def score(self, prompt: str, label: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
    keys = [(prompt, user_message(q, label, info, self.max_info_chars)) for q, info in pairs]
    with self._lock:
      todo = [k for k in dict.fromkeys(keys) if k not in self.likelihood_memo]
    # Similar lengths together, in power-of-two chunks: the backend pads a batch
    # to the next power of two rows and to its longest request.
    todo.sort(key=lambda k: len(k[0]) + len(k[1]))
    at = 0
    for size in chunk_sizes(len(todo)):
      chunk = todo[at:at + size]
      at += size
      padded = chunk + [chunk[-1]] * (size - len(chunk))
      requests = [[{"role": "system", "content": p}, {"role": "user", "content": u}]
                  for p, u in padded]
      logp = np.asarray(self.llm.option_logprobs(requests, [YES], prefix=ANSWER_PREFIX))[:, 0]
      with self._lock:
        self.likelihood_memo.update((k, float(math.exp(v))) for k, v in zip(chunk, logp))
    with self._lock:
      return [self.likelihood_memo[k] for k in keys]


def _infos(x: dict, field: str) -> list[str]:
  q, infos = x.get("question"), x.get(field)
  if not isinstance(q, str) or not q.strip():
    raise ValueError(f"question must be a non-empty string, got {q!r:.60}")
  if (not isinstance(infos, list) or not infos
      or not all(isinstance(s, str) for s in infos)):
    raise ValueError(f"{field} must be a non-empty list of strings, got {infos!r:.60}")
  return infos


def scorer_call(scorer: LikelihoodScorer, info_field: str, label: str, out_field: str):
  """The batch call of a scorer: every candidate of every example in one LLM batch.

  An example with a malformed field fails alone (its slot holds the error).
  """
  def call(inputs, prompt, rng):
    del rng   # likelihoods: nothing is sampled
    out: list = [None] * len(inputs)
    owners, pairs = [], []
    for i, x in enumerate(inputs):
      try:
        infos = _infos(x, info_field)
      except ValueError as e:
        out[i] = e
        continue
      owners.append((i, len(infos)))
      pairs += [(x["question"], info) for info in infos]
    scores = scorer.score(prompt, label, pairs) if pairs else []
    at = 0
    for i, n in owners:
      out[i] = {out_field: [round(s, 4) for s in scores[at:at + n]]}
      at += n
    return out
  return call


def final_call(inputs, weights, rng):
  del rng
  out: list = []
  for x in inputs:
    e, r, t = x["emb_scores"], x["relation_scores"], x["text_scores"]
    if not (isinstance(e, list) and len(e) == len(r) == len(t)):
      out.append(ValueError(f"score lists differ in length: emb {len(e)}, relation {len(r)}, "
                            f"text {len(t)}"))
      continue
    out.append({"final_scores": [
        round(float(ei) + weights["relation_weight"] * float(ri)
              + weights["text_weight"] * float(ti), 4) for ei, ri, ti in zip(e, r, t)]})
  return out


def make_components(scorer: LikelihoodScorer, weights: tuple[float, float],
                    weight_range: tuple[float, float]) -> list[osys.Component]:
  space = osys.FloatRange(float(weight_range[0]), float(weight_range[1]))
  return [
      osys.Component("relation_scorer",
                     "Given a question and a list of entities with their relational "
                     "information, assign each entity a relevance score between 0 and 1 based "
                     "on how well its relations match the information in the question.",
                     ["question", "relation_info"], ["relation_scores"],
                     scorer_call(scorer, "relation_info", RELATION_LABEL, "relation_scores"),
                     osys.Prompt(RELATION_PROMPT), deterministic=True),
      osys.Component("text_scorer",
                     "Given a question and a list of entities with their property information, "
                     "assign each entity a relevance score between 0 and 1 based on how well "
                     "its properties match the requirements described in the question.",
                     ["question", "text_info"], ["text_scores"],
                     scorer_call(scorer, "text_info", TEXT_LABEL, "text_scores"),
                     osys.Prompt(TEXT_PROMPT), deterministic=True),
      osys.Component("final_scorer",
                     "Given a question, assess the importance of textual properties, relational "
                     "cues, and general semantics in retrieving an entity. Combine the three "
                     "score lists into a final score list using weighted aggregation.",
                     ["question", "emb_scores", "relation_scores", "text_scores"],
                     ["final_scores"], final_call,
                     osys.Hyperparameters({"relation_weight": space, "text_weight": space},
                                          {"relation_weight": float(weights[0]),
                                           "text_weight": float(weights[1])}),
                     deterministic=True),
  ]


# ------------------------------------------------------------------ metrics


def ranked(example: dict, prediction: dict) -> list:
  return metrics.rank_by_scores(example["candidate_ids"], prediction["final_scores"])


def mrr(example: dict, prediction: dict) -> float:
  """Reciprocal rank of the first gold answer among the reranked candidates (0 if none)."""
  return metrics.reciprocal_rank(ranked(example, prediction), example["answer_ids"])


def full_ranking(example: dict, prediction: dict) -> list:
  """The reranked candidates, then the rest of the first stage's ranking (when known)."""
  head = ranked(example, prediction)
  return head + [i for i in example.get("retrieved_ids", ()) if i not in set(head)]


def build_system(scorer: LikelihoodScorer, weights=(0.1, 0.1),
                 weight_range=(0.0, 1.0)) -> osys.System:
  metric = osys.Metric(mrr, ["final_scores"], name="mrr", failure_value=0.0)
  return osys.System(make_components(scorer, weights, weight_range),
                     ["question", "relation_info", "text_info", "emb_scores"], metric)


def _mean(examples, result, fn) -> float:
  return float(np.mean([0.0 if p is None else fn(ex, p)
                        for ex, p in zip(examples, result.predictions)])) if examples else 0.0


def hit_at_1(examples, result) -> float:
  return _mean(examples, result,
               lambda ex, p: metrics.hit_at_k(ranked(ex, p), ex["answer_ids"], 1))


def recall_at_20(examples, result) -> float:
  return _mean(examples, result, lambda ex, p: metrics.recall_at_k(
      full_ranking(ex, p), ex["answer_ids"], RECALL_K))


def first_stage_mrr(examples, result) -> float:
  """MRR of the candidates in first-stage order (emb_scores alone): the floor to beat."""
  del result
  return float(np.mean([metrics.reciprocal_rank(
      metrics.rank_by_scores(ex["candidate_ids"], ex["emb_scores"]), ex["answer_ids"])
      for ex in examples])) if examples else 0.0


def first_stage_recall(examples, result) -> float:
  """Share of examples with a gold answer among the candidates (the MRR ceiling)."""
  del result
  return float(np.mean([metrics.hit_at_k(ex["candidate_ids"], ex["answer_ids"],
                                         len(ex["candidate_ids"]))
                        for ex in examples])) if examples else 0.0


EXTRA_METRICS = {"hit_at_1": hit_at_1, "recall_at_20": recall_at_20,
                 "first_stage_mrr": first_stage_mrr, "first_stage_recall": first_stage_recall}
