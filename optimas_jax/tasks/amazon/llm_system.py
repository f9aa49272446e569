"""Amazon next-item selection in the paper's shape: two LLM policies and a decider.

  session_analyzer (SmolLM2 + LoRA adapter: model parameters; writes what
    the shopper is after) -> candidate_profiler (SmolLM2 + LoRA adapter;
    reads that summary and the numbered candidates, names the best number)
    -> next_item_decider (hyperparameters: trust the profiler's number, or
    the candidate closest to the analyzer's summary in MiniLM space)

As in the paper, both LLM stages are trained by RL against their local
rewards (the TextPolicy of each, loop/objectives.py); the decider is searched.
With variable="prompt" the two stages' system prompts are the variables
instead (prompt optimization of the same components, no adapter).
The MiniLM-feature system (tasks/amazon/system.py) stays the `amazon` task;
this one is `amazon_llm`.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from optimas_jax import system as osys

ANALYZER_PROMPT = "Describe in a few words the kind of product this shopper is looking for."
PROFILER_PROMPT = ("Which candidate product will the shopper click next? Reply with its "
                   "number only.")
# Edits the prompt optimizer may add (loop's prompt variable, variable="prompt").
PROMPT_HINTS = {
    "session_analyzer": ("Name the product category.", "Mention the brand if one repeats.",
                         "Reply with keywords only, no full sentence."),
    "candidate_profiler": ("Prefer the candidate most similar to the recent items.",
                           "Reply with a single digit.", "Think of the same brand and category."),
}


@dataclasses.dataclass(frozen=True)
class PromptSizes:
  """How much of a session the prompts show (prefill dominates the cost on CPU)."""

  session_items: int = 5     # the most recent titles the analyzer reads
  title_chars: int = 80      # titles are cut to this many characters

  def __post_init__(self):
    if self.session_items < 1 or self.title_chars < 8:
      raise ValueError(f"config.system.session_items={self.session_items} (need >= 1), "
                       f"title_chars={self.title_chars} (need >= 8)")

  def title(self, t: str) -> str:
    n = self.title_chars
    return t if len(t) <= n else t[:n].rsplit(" ", 1)[0] + "..."


def analyzer_requests(inputs, prompt: str = ANALYZER_PROMPT,
                      sizes: PromptSizes = PromptSizes()) -> list[list[dict]]:
  return [[{"role": "system", "content": prompt},
           {"role": "user", "content": "Recently viewed:\n" + "\n".join(
               f"- {sizes.title(t)}" for t in x["sequence"][-sizes.session_items:])}]
          for x in inputs]


def analyzer_output(text: str) -> dict:
  return {"summary": text.strip().split("\n")[0][:200]}


def profiler_requests(inputs, prompt: str = PROFILER_PROMPT,
                      sizes: PromptSizes = PromptSizes()) -> list[list[dict]]:
  return [[{"role": "system", "content": prompt},
           {"role": "user", "content": f"The shopper is looking for: {x['summary']}\n"
                                       "Candidates:\n" + "\n".join(
               f"{j + 1}. {sizes.title(t)}" for j, t in enumerate(x["choices"]))
            + "\nNumber:"}] for x in inputs]


def profiler_output(text: str) -> dict:
  """The first candidate number in the reply (0 when there is none)."""
  m = re.search(r"\b([1-9])\b", text)
  return {"profiler_pick": int(m.group(1)) if m else 0, "profiler_text": text.strip()[:100]}


VARIABLES = ("lora", "prompt")


def check_variable(variable: str) -> None:
  if variable not in VARIABLES:
    raise ValueError(f"config.system.policy_variable={variable!r}; choose one of {VARIABLES}")


def make_components(embedder, llm, adapter_inits: dict, max_new_tokens: dict,
                    propose_temperature: float, variable: str = "lora",
                    sizes: PromptSizes = PromptSizes()) -> list[osys.Component]:
  """variable: "lora" (each LLM stage's adapter is its variable) or "prompt"."""
  from optimas_jax.llm.base import SamplingParams

  def llm_component(name, description, inputs_, outputs_, requests, output, prompt):
    tokens = max_new_tokens[name]
    requests = functools.partial(requests, sizes=sizes)

    def generate(inputs, value, temperature, rng):
      params = SamplingParams(temperature=temperature, max_new_tokens=tokens)
      keys = rng.jax_keys() if temperature > 0 else None
      if variable == "prompt":
        return [g.text for g in llm.generate(requests(inputs, value), params, keys)]
      return [g.text for g in llm.generate(requests(inputs), params, keys, adapter=value)]

    def call(inputs, adapter, rng):
      return [output(t) for t in generate(inputs, adapter, 0.0, rng)]

    def propose(inputs, adapter, num, rng):
      rows = [x for x in inputs for _ in range(num)]
      seeds = tuple(osys.derive_seed(s, "alt", j) for s in rng.seeds for j in range(num))
      texts = generate(rows, adapter, propose_temperature, osys.BatchRng(seeds))
      return [[output(t) for t in texts[i * num:(i + 1) * num]] for i in range(len(inputs))]

    spec = (osys.Prompt(prompt) if variable == "prompt"
            else osys.ModelParameters(adapter_inits[name]))
    return osys.Component(name, description, inputs_, outputs_, call, spec, propose=propose,
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
                    analyzer_requests, analyzer_output, ANALYZER_PROMPT),
      llm_component("candidate_profiler", "Name the candidate the shopper will click next.",
                    ["summary", "choices"], ["profiler_pick", "profiler_text"],
                    profiler_requests, profiler_output, PROFILER_PROMPT),
      osys.Component("next_item_decider", "Pick the product the shopper will click next.",
                     ["summary", "choices", "profiler_pick"], ["choice"], decide,
                     osys.Hyperparameters({"rule": osys.Choice(("profiler", "similarity"))},
                                          {"rule": "profiler"}),
                     deterministic=True),
  ]


def build_system(embedder, llm, adapter_inits: dict, max_new_tokens: dict,
                 propose_temperature: float = 1.0, variable: str = "lora",
                 sizes: PromptSizes = PromptSizes()) -> osys.System:
  check_variable(variable)
  metric = osys.Metric(lambda ex, pred: float(pred["choice"] == ex["choices"][ex["answer"]]),
                       ["choice"], name="accuracy", failure_value=0.0)
  return osys.System(make_components(embedder, llm, adapter_inits, max_new_tokens,
                                     propose_temperature, variable, sizes),
                     ["sequence", "choices"], metric)
