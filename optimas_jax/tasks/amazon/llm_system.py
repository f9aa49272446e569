"""Amazon next-item selection in the paper's shape: two LLM policies and a decider.

  session_analyzer (SmolLM2 + LoRA adapter: model parameters; writes what
    the shopper is after) -> candidate_profiler (SmolLM2 + LoRA adapter;
    reads that summary and the numbered candidates, names the best number)
    -> next_item_decider (hyperparameters: trust the profiler's number, or
    the candidate closest to the analyzer's summary in MiniLM space)

As in the paper, both LLM stages are trained by RL against their local
rewards (the TextPolicy of each, loop/methods.py); the decider is searched.
The MiniLM-feature system (tasks/amazon/system.py) stays the `amazon` task;
this one is `amazon_llm`.
"""

from __future__ import annotations

import re

import numpy as np

from optimas_jax import system as osys

ANALYZER_PROMPT = "Describe in a few words the kind of product this shopper is looking for."
PROFILER_PROMPT = ("Which candidate product will the shopper click next? Reply with its "
                   "number only.")
SESSION_ITEMS = 5          # the most recent titles the analyzer reads
TITLE_CHARS = 80           # titles are cut to keep prompts short on CPU


def _title(t: str) -> str:
  return t if len(t) <= TITLE_CHARS else t[:TITLE_CHARS].rsplit(" ", 1)[0] + "..."


def analyzer_requests(inputs) -> list[list[dict]]:
  return [[{"role": "system", "content": ANALYZER_PROMPT},
           {"role": "user", "content": "Recently viewed:\n" + "\n".join(
               f"- {_title(t)}" for t in x["sequence"][-SESSION_ITEMS:])}] for x in inputs]


def analyzer_output(text: str) -> dict:
  return {"summary": text.strip().split("\n")[0][:200]}


def profiler_requests(inputs) -> list[list[dict]]:
  return [[{"role": "system", "content": PROFILER_PROMPT},
           {"role": "user", "content": f"The shopper is looking for: {x['summary']}\n"
                                       "Candidates:\n" + "\n".join(
               f"{j + 1}. {_title(t)}" for j, t in enumerate(x["choices"]))
            + "\nNumber:"}] for x in inputs]


def profiler_output(text: str) -> dict:
  """The first candidate number in the reply (0 when there is none)."""
  m = re.search(r"\b([1-9])\b", text)
  return {"profiler_pick": int(m.group(1)) if m else 0, "profiler_text": text.strip()[:100]}


def make_components(embedder, llm, adapter_inits: dict, max_new_tokens: dict,
                    propose_temperature: float) -> list[osys.Component]:
  from optimas_jax.llm.base import SamplingParams

  def llm_component(name, description, inputs_, outputs_, requests, output):
    tokens = max_new_tokens[name]

    def generate(inputs, adapter, temperature, rng):
      params = SamplingParams(temperature=temperature, max_new_tokens=tokens)
      keys = rng.jax_keys() if temperature > 0 else None
      return [g.text for g in llm.generate(requests(inputs), params, keys, adapter=adapter)]

    def call(inputs, adapter, rng):
      return [output(t) for t in generate(inputs, adapter, 0.0, rng)]

    def propose(inputs, adapter, num, rng):
      rows = [x for x in inputs for _ in range(num)]
      seeds = tuple(osys.derive_seed(s, "alt", j) for s in rng.seeds for j in range(num))
      texts = generate(rows, adapter, propose_temperature, osys.BatchRng(seeds))
      return [[output(t) for t in texts[i * num:(i + 1) * num]] for i in range(len(inputs))]

    return osys.Component(name, description, inputs_, outputs_, call,
                          osys.ModelParameters(adapter_inits[name]), propose=propose,
                          deterministic=True)

  def decide(inputs, hp, rng):
    out = []
    for x in inputs:
      n = len(x["choices"])
      sims = embedder.embed(x["choices"]) @ embedder.embed([x["summary"]])[0]
      by_similarity = int(np.argmax(sims))
      pick = x["profiler_pick"] - 1
      if hp["rule"] == "similarity" or not 0 <= pick < n:
        pick = by_similarity        # no usable number: the summary decides
      out.append({"choice": x["choices"][pick]})
    return out

  return [
      llm_component("session_analyzer", "Describe the product the shopper is looking for, "
                    "from the recently viewed titles.", ["sequence"], ["summary"],
                    analyzer_requests, analyzer_output),
      llm_component("candidate_profiler", "Name the candidate the shopper will click next.",
                    ["summary", "choices"], ["profiler_pick", "profiler_text"],
                    profiler_requests, profiler_output),
      osys.Component("next_item_decider", "Pick the product the shopper will click next.",
                     ["summary", "choices", "profiler_pick"], ["choice"], decide,
                     osys.Hyperparameters({"rule": osys.Choice(("profiler", "similarity"))},
                                          {"rule": "profiler"}),
                     deterministic=True),
  ]


def build_system(embedder, llm, adapter_inits: dict, max_new_tokens: dict,
                 propose_temperature: float = 1.0) -> osys.System:
  metric = osys.Metric(lambda ex, pred: float(pred["choice"] == ex["choices"][ex["answer"]]),
                       ["choice"], name="accuracy", failure_value=0.0)
  return osys.System(make_components(embedder, llm, adapter_inits, max_new_tokens,
                                     propose_temperature), ["sequence", "choices"], metric)
