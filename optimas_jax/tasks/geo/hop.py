"""GeoQA-hop: bridge questions where the query writer's text decides the answer.

  hop_retriever (BM25, question -> the capital's passage) -> query_writer
  (SmolLM2: a LoRA adapter trained by RL, or a prompt) -> retriever (BM25
  over the query alone) -> answerer (fact reader)

"What currency is used in the country whose capital is Lima?" retrieves
"Lima is the capital city of Peru." but never Peru's own passage: country
passages here do not name their capital, so the question's words cannot
reach them. Only a query that names the country found in the hop passage
("Peru currency") retrieves the passage the answer is in. The retriever
reads the query alone, so the query writer is the only component whose
output matters, and the only one optimized (the paper's RL setting: one LLM
policy trained against its local reward).

Metric: exact match of the currency name. Countries whose capital shares a
word with the country's name (Singapore, Mexico City) are left out: there the
question alone would reach the answer.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re

import numpy as np

from optimas_jax import system as osys
from optimas_jax.tasks import metrics
from optimas_jax.tasks.geo import data as geo_data
from optimas_jax.tasks.geo import facts
from optimas_jax.tasks.geo.system import content_words

WRITER_PROMPT = ("Write a short search query for the question.")
QUESTION = "What currency is used in the country whose capital is {capital}?"
_COUNTRY = re.compile(r"(?P<name>.+?) is a country in (?P<continent>[^.]+)\. "
                      r"The currency of .+? is the (?P<currency>[^.]+)\.")


def country_passage(c: facts.Country) -> str:
  """A country's facts without its capital: the question's words cannot find it."""
  return (f"{c.name} is a country in {c.continent}. The currency of {c.name} is the "
          f"{c.currency}. {c.name} has a population of {c.population:,}.")


def capital_passage(c: facts.Country) -> str:
  return f"{c.capital} is the capital city of {c.name}."


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[str, ...]:
  """One country passage and one capital passage per usable country."""
  pool = geo_data._usable()
  return tuple([country_passage(c) for c in pool] + [capital_passage(c) for c in pool])


def hop_countries() -> list[facts.Country]:
  """Usable countries whose capital's words name neither the country nor another capital."""
  pool = geo_data._usable()
  words = collections.Counter(" ".join(content_words(c.capital)) for c in pool)
  return [c for c in pool if words[" ".join(content_words(c.capital))] == 1
          and not set(content_words(c.capital)) & set(content_words(c.name))]


def make_splits(sizes: dict[str, int], seed: int) -> dict[str, list[dict]]:
  """Fixed-seed splits over disjoint countries, one question per country."""
  pool = hop_countries()
  order = np.random.default_rng(seed).permutation(len(pool))
  total = sum(sizes.values())
  if total > len(pool):
    raise ValueError(f"geoqa_hop sizes {sizes} ask for {total} questions; at most "
                     f"{len(pool)} countries exist (one question per country)")
  out, at = {}, 0
  for name, n in sizes.items():
    rows = []
    for j in order[at:at + n]:
      c = pool[int(j)]
      rows.append({"id": f"{name}-{len(rows)}", "question": QUESTION.format(capital=c.capital),
                   "answer": c.currency, "country": c.name})
    out[name] = rows
    at += n
  return out


def read_answer(passages: list[str]) -> str:
  """The first retrieved country passage's currency ("" if none)."""
  for p in passages:
    m = _COUNTRY.match(p)
    if m:
      return m["currency"]
  return ""


@dataclasses.dataclass
class HopResources:
  passages: tuple[str, ...]
  bm25: object
  llm: object | None

  def top(self, text: str, k: int) -> list[str]:
    scores = self.bm25.get_scores(content_words(text) or ["_"])
    return [self.passages[j] for j in np.argsort(-scores, kind="stable")[:k]]


def load_resources(llm=None) -> HopResources:
  from rank_bm25 import BM25Okapi
  passages = corpus()
  return HopResources(passages, BM25Okapi([content_words(p) or ["_"] for p in passages]), llm)


def writer_requests(inputs) -> list[list[dict]]:
  """The chat each query-writer input becomes (one function for call, propose and RL)."""
  return [[{"role": "system", "content": WRITER_PROMPT},
           {"role": "user", "content": f"Passage: {x['hop_passage']}\n"
                                       f"Question: {x['question']}\nQuery:"}]
          for x in inputs]


def writer_requests_with(prompt: str, inputs) -> list[list[dict]]:
  return [[{"role": "system", "content": prompt}, r[1]] for r in writer_requests(inputs)]


def query_from_text(text: str) -> dict:
  """The component's output for one completion (first line, capped)."""
  return {"query": text.strip().split("\n")[0][:200]}


def make_components(res: HopResources, variable: str, max_new_tokens: int,
                    propose_temperature: float, adapter_init=None) -> list[osys.Component]:
  """variable: "lora" (the writer's adapter is the variable) or "prompt"."""
  from optimas_jax.llm.base import SamplingParams

  def generate(inputs, value, temperature, rng):
    if variable == "lora":
      requests, adapter = writer_requests(inputs), value
    else:
      requests, adapter = writer_requests_with(value, inputs), None
    params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
    keys = rng.jax_keys() if temperature > 0 else None
    kwargs = {"adapter": adapter} if adapter is not None else {}
    return [g.text for g in res.llm.generate(requests, params, keys, **kwargs)]

  def hop(inputs, _, rng):
    return [{"hop_passage": res.top(x["question"], 1)[0]} for x in inputs]

  def write(inputs, value, rng):
    # Deployed greedily: the policy's mode is what a user gets.
    return [query_from_text(t) for t in generate(inputs, value, 0.0, rng)]

  def propose(inputs, value, num, rng):
    # Alternatives for preference pairs: samples of the same policy.
    rows = [x for x in inputs for _ in range(num)]
    seeds = tuple(osys.derive_seed(s, "alt", j) for s in rng.seeds for j in range(num))
    texts = generate(rows, value, propose_temperature, osys.BatchRng(seeds))
    return [[query_from_text(t) for t in texts[i * num:(i + 1) * num]]
            for i in range(len(inputs))]

  def retrieve(inputs, _, rng):
    return [{"passages": res.top(x["query"], 2)} for x in inputs]

  def answer(inputs, _, rng):
    return [{"answer": read_answer(x["passages"])} for x in inputs]

  spec = (osys.ModelParameters(adapter_init) if variable == "lora"
          else osys.Prompt(WRITER_PROMPT))
  return [
      osys.Component("hop_retriever", "Find the passage about the capital the question names.",
                     ["question"], ["hop_passage"], hop, deterministic=True),
      osys.Component("query_writer", "Write a search query that names the country in the "
                     "passage and what the question asks about it.",
                     ["question", "hop_passage"], ["query"], write, spec, propose=propose,
                     deterministic=True),
      osys.Component("retriever", "Retrieve passages for the query.", ["query"], ["passages"],
                     retrieve, deterministic=True),
      osys.Component("answerer", "Answer the question from the retrieved passages.",
                     ["question", "passages"], ["answer"], answer, deterministic=True),
  ]


def build_system(res: HopResources, variable: str = "lora", max_new_tokens: int = 12,
                 propose_temperature: float = 1.0, adapter_init=None) -> osys.System:
  if variable not in ("lora", "prompt"):
    raise ValueError(f"config.system.writer_variable={variable!r}; choose 'lora' or 'prompt'")
  metric = osys.Metric(lambda ex, pred: metrics.exact_match(pred["answer"], ex["answer"]),
                       ["answer"], name="exact_match", failure_value=0.0)
  return osys.System(make_components(res, variable, max_new_tokens, propose_temperature,
                                     adapter_init), ["question"], metric)


def retrieval_hit(examples, result) -> float:
  """Share of examples whose retrieved passages include the asked country's passage."""
  hits = []
  for ex, pred in zip(examples, result.predictions):
    hits.append(0.0 if pred is None else float(any(
        p.startswith(f"{ex['country']} is a country") for p in pred["passages"])))
  return float(np.mean(hits)) if hits else 0.0
