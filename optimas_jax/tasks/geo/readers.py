"""Answer readers for GeoQA: a fact reader (a deterministic tool) and its parsing."""

from __future__ import annotations

import re

_COUNTRY = re.compile(
    r"(?P<name>.+?) is a country in (?P<continent>[^.]+)\. Its capital is (?P<capital>[^.]+)\. "
    r"The currency of .+? is the (?P<currency>[^.]+)\. .+? has a population of "
    r"(?P<population>[\d,]+) and an area of (?P<area>[\d,]+) square kilometres\.")


def parse_country(passage: str) -> dict | None:
  m = _COUNTRY.match(passage)
  if not m:
    return None
  d = m.groupdict()
  d["population"] = int(d["population"].replace(",", ""))
  d["area"] = int(d["area"].replace(",", ""))
  return d


def fact_reader(question: str, passages: list[str]) -> str:
  """Answers from the country facts found in `passages` ("" when it cannot).

  A tool, not a model: it only knows the corpus's sentence patterns, so it
  is exactly as good as the evidence it is given.
  """
  records = [r for r in map(parse_country, passages) if r]
  if not records:
    return ""
  q = question.lower()
  if q.startswith("which has more inhabitants") or q.startswith("which is larger by area"):
    key = "population" if "inhabitants" in q else "area"
    named = [r for r in records if r["name"].lower() in q]
    if len(named) < 2:
      return named[0]["name"] if named else ""
    return max(named, key=lambda r: r[key])["name"]
  m = re.search(r"whose capital is (.+?)\?|has (.+?) as its capital", question)
  if m:
    capital = (m.group(1) or m.group(2)).lower()
    hits = [r for r in records if r["capital"].lower() == capital]
  else:
    hits = [r for r in records if r["name"].lower() in q]
  if not hits:
    return ""
  r = max(hits, key=lambda r: len(r["name"]))
  if "currency" in q:
    return r["currency"]
  if "continent" in q:
    return r["continent"]
  if "capital of" in q:
    return r["capital"]
  return r["name"]
