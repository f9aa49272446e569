"""Answer metrics shared by the QA tasks (HotpotQA-style normalisation)."""

from __future__ import annotations

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
  text = str(text).lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
  pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not pred or not ref:
    return float(pred == ref)
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


# Ranking metrics (STaRK's MRR, Hit@k, Recall@k) over a list of ids, best first.


def rank_by_scores(ids, scores) -> list:
  """`ids` by descending score; equal scores keep their given order (a stable sort)."""
  if len(ids) != len(scores):
    raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
  order = sorted(range(len(ids)), key=lambda i: -float(scores[i]))
  return [ids[i] for i in order]


def reciprocal_rank(ranked, gold) -> float:
  """1 / (1-based rank of the first gold id), 0 when none is ranked."""
  gold = set(gold)
  return next((1.0 / r for r, i in enumerate(ranked, start=1) if i in gold), 0.0)


def hit_at_k(ranked, gold, k: int) -> float:
  return float(bool(set(ranked[:k]) & set(gold)))


def recall_at_k(ranked, gold, k: int) -> float:
  """Share of the gold ids among the first k (0 when there is no gold id)."""
  gold = set(gold)
  return len(set(ranked[:k]) & gold) / len(gold) if gold else 0.0
