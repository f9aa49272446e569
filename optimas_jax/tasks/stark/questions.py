"""Questions over the GeoNames KB that need both a relation and a property.

Each template pairs a one-hop relation of the answer node (which
`relation_info` shows) with a property of it (which only `text_info`
shows), as STaRK's queries mix relational and textual requirements:

  neighbour_population  "Which country bordering Peru has more than 30 million inhabitants?"
  neighbour_area        "Which neighbour of Peru has an area of less than 500,000 square kilometres?"
  continent_language    "Which country in South America has Quechua among its languages?"
  currency_population   "Which country that uses the Euro (EUR) has fewer than 2 million inhabitants?"
  city_population       "Which city in Peru has more than 5 million inhabitants?"

Answers are node ids (1 to MAX_ANSWERS of them); the thresholds are round
numbers strictly between two members' values, so every question has at
least one answer and at least one related node that is not an answer.
"""

from __future__ import annotations

import math

import numpy as np

from optimas_jax.tasks.stark.kb import KnowledgeBase, millions

MAX_ANSWERS = 3
TEMPLATES = ("neighbour_population", "neighbour_area", "continent_language",
             "currency_population", "city_population")


def round_between(low: float, high: float) -> float | None:
  """The roundest number strictly between low and high (fewest significant digits)."""
  if not high > low:
    return None
  top = math.floor(math.log10(high)) if high > 0 else 0
  for digits in range(1, 8):
    step = 10.0 ** (top - digits + 1)
    value = (math.floor(low / step) + 1) * step
    if low < value < high:
      return float(value)
  return None


def _cut(values: list[float], rng: np.random.Generator, unit: str) -> tuple[str, float, set] | None:
  """(comparison words, threshold, indices of the answers) for one random cut, or None."""
  order = sorted(range(len(values)), key=lambda i: values[i])
  most = min(MAX_ANSWERS, len(values) - 1)
  if most < 1:
    return None
  count = int(rng.integers(1, most + 1))
  above = rng.random() < 0.5
  if above:        # the `count` largest are the answers
    lo, hi = values[order[-count - 1]], values[order[-count]]
  else:            # the `count` smallest
    lo, hi = values[order[count - 1]], values[order[count]]
  t = round_between(lo, hi)
  if t is None:
    return None
  words = {("people", True): "more than", ("people", False): "fewer than",
           ("area", True): "more than", ("area", False): "less than"}[(unit, above)]
  answers = {i for i, v in enumerate(values) if (v > t if above else v < t)}
  return words, t, answers


def _threshold_question(kb: KnowledgeBase, rng, template: str, anchor: int,
                        members: tuple[int, ...], unit: str) -> dict | None:
  values = [kb.nodes[m].population if unit == "people" else kb.nodes[m].area_km2
            for m in members]
  cut = _cut(values, rng, unit)
  if cut is None:
    return None
  words, t, answers = cut
  name = kb.nodes[anchor].name
  if template == "neighbour_population":
    q = f"Which country bordering {name} has {words} {millions(t)} inhabitants?"
  elif template == "neighbour_area":
    q = f"Which neighbour of {name} has an area of {words} {t:,.0f} square kilometres?"
  elif template == "currency_population":
    q = f"Which country that uses the {name} has {words} {millions(t)} inhabitants?"
  else:
    q = f"Which city in {name} has {words} {millions(t)} inhabitants?"
  return {"question": q, "answer_ids": sorted(members[i] for i in answers), "type": template,
          "anchor_id": anchor, "threshold": t, "above": words == "more than"}


def _template_questions(kb: KnowledgeBase, template: str, rng) -> list[dict]:
  out = []
  if template == "continent_language":
    for continent in kb.of_type("continent"):
      countries = [kb.nodes[i] for i in kb.related(continent.id, "has_country")]
      speakers: dict[str, list[int]] = {}
      for c in countries:
        for lang in c.languages:
          speakers.setdefault(lang, []).append(c.id)
      for lang, ids in sorted(speakers.items()):
        if 1 <= len(ids) <= MAX_ANSWERS and len(ids) < len(countries):
          out.append({"question": f"Which country in {continent.name} has {lang} among its "
                                  "languages?", "answer_ids": sorted(ids), "type": template,
                      "anchor_id": continent.id, "language": lang})
    return out
  relation, kind = {"neighbour_population": ("neighbour_of", "country"),
                    "neighbour_area": ("neighbour_of", "country"),
                    "currency_population": ("used_by", "currency"),
                    "city_population": ("has_city", "country")}[template]
  unit = "area" if template == "neighbour_area" else "people"
  for anchor in kb.of_type(kind):
    members = kb.related(anchor.id, relation)
    if len(members) >= 2:
      q = _threshold_question(kb, rng, template, anchor.id, members, unit)
      if q is not None:
        out.append(q)
  return out


def question_pool(kb: KnowledgeBase, seed: int) -> list[dict]:
  """Every template's questions, each list shuffled, interleaved template by template."""
  lists = []
  for t, template in enumerate(TEMPLATES):
    rng = np.random.default_rng([seed, t])
    qs = _template_questions(kb, template, rng)
    lists.append([qs[i] for i in rng.permutation(len(qs))])
  pool, seen = [], set()
  for row in range(max(map(len, lists))):
    for qs in lists:
      if row < len(qs) and qs[row]["question"] not in seen:
        seen.add(qs[row]["question"])
        pool.append(qs[row])
  return pool


def make_splits(kb: KnowledgeBase, sizes: dict[str, int], seed: int) -> dict[str, list[dict]]:
  """Disjoint train / val / test questions, cut in order from the seeded pool."""
  pool = question_pool(kb, seed)
  need = sum(sizes.values())
  if need > len(pool):
    raise ValueError(f"stark geonames: {need} questions asked for ({sizes}) but the KB yields "
                     f"{len(pool)}; lower config.data sizes")
  out, start = {}, 0
  for name, n in sizes.items():
    out[name] = [{"id": f"{name}-{i}", **q} for i, q in enumerate(pool[start:start + n])]
    start += n
  return out
