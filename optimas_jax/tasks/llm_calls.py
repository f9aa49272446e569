"""How task components call an LLM: a batch of chats, one key per example."""

from __future__ import annotations

import jax

from optimas_jax.llm.base import SamplingParams
from optimas_jax.system import BatchRng


def chat(llm, system_prompt: str, users: list[str], max_new_tokens: int,
         temperature: float, rng: BatchRng | None = None,
         prefills: list[str] | None = None) -> list[str]:
  """One reply per user message, under `system_prompt`; greedy when temperature is 0.

  Sampling gives each example its own key (from its seed in `rng`), so its
  reply does not depend on the other examples of the batch. `prefills`: text
  each reply begins with, for backends that render their own prompt (local
  models: the rendered chat plus the prefill is completed as-is, and the reply
  returned starts with the prefill); other backends ignore it.
  """
  if llm is None:
    raise RuntimeError("this component needs an LLM, but none was configured (config.llm)")
  requests = [[{"role": "system", "content": system_prompt}, {"role": "user", "content": u}]
              for u in users]
  if prefills is not None and hasattr(llm, "render"):
    requests = [llm.render(r) + p for r, p in zip(requests, prefills, strict=True)]
  else:
    prefills = None
  params = SamplingParams(temperature=temperature, top_p=0.95 if temperature > 0 else 1.0,
                          max_new_tokens=max_new_tokens)
  keys = None
  if temperature > 0:
    if rng is None:
      raise ValueError("sampling (temperature > 0) needs the component's BatchRng")
    if len(rng) != len(users):
      raise ValueError(f"rng has {len(rng)} seeds for {len(users)} user messages; pass the "
                       "component's BatchRng for this batch (rng.subset(...) for a part of it)")
    keys = rng.jax_keys()
  gens = llm.generate(requests, params, keys)
  if prefills is not None:
    return [p + g.text.rstrip() for p, g in zip(prefills, gens)]
  return [g.text.strip() for g in gens]


def completer(llm, max_new_tokens: int = 64):
  """(prompts, seed) -> texts: the prompt optimizer's proposal LLM (Task.complete).

  One key for the call: prompt r samples with that key folded with r.
  """
  def complete(prompts, seed):
    gens = llm.generate(list(prompts), SamplingParams(temperature=0.9, top_p=0.95,
                                                      max_new_tokens=max_new_tokens),
                        jax.random.key(seed & 0x7FFFFFFF))
    return [g.text for g in gens]
  return complete
