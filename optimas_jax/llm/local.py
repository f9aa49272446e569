"""Local LLM backend: the JAX Llama decoder behind the ``LLM`` interface."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax.numpy as jnp

from optimas_jax.llm.base import LLM, Generation, Request, SamplingParams
from optimas_jax.models import generate as gen_lib
from optimas_jax.models import registry

# Chat model names -> registry backbone names.
LOCAL_MODELS = {
    "smollm2-135m-instruct": "smollm2-135m",
    "tiny-llama": "tiny-llama",
}


class LocalLLM(LLM):
  """Batched generation with a local decoder; thread-safe, counts tokens."""

  def __init__(self, backbone: registry.Backbone, *, max_batch: int = 32,
               prompt_multiple: int = 64, max_context: int | None = None,
               max_traces: int | None = None):
    super().__init__()
    if backbone.kind != "decoder":
      raise ValueError(f"backbone {backbone.name!r} is an {backbone.kind}; LocalLLM needs a decoder")
    self.name = backbone.name
    self.tokenizer = backbone.tokenizer
    self.generator = gen_lib.Generator(backbone.module, backbone.params, backbone.pad_id,
                                       prompt_multiple=prompt_multiple, max_batch=max_batch,
                                       max_context=max_context, max_traces=max_traces)

  def render(self, request: Request) -> str:
    """The prompt text fed to the model (chat messages go through the template)."""
    if isinstance(request, str):
      return request
    return self.tokenizer.apply_chat_template(list(request), add_generation_prompt=True)

  def _stop_ids(self, stop: Sequence[str]) -> list[int]:
    # Stop strings that are one token also stop the decode loop early.
    ids = list(self.tokenizer.eos_ids)
    for s in stop:
      enc = self.tokenizer.encode(s, add_special_tokens=False)
      if len(enc) == 1:
        ids.append(enc[0])
    return list(dict.fromkeys(ids))

  def generate(self, requests: Sequence[Request], params: SamplingParams = SamplingParams(),
               rng: Any = None) -> list[Generation]:
    if isinstance(requests, str):
      raise TypeError("generate() takes a list of requests; wrap a single prompt in a list")
    prompts = self.tokenizer.encode_batch([self.render(r) for r in requests],
                                          add_special_tokens=False)
    completions = self.generator.generate_ids(
        prompts, max_new_tokens=params.max_new_tokens, stop_ids=self._stop_ids(params.stop),
        temperature=params.temperature, top_p=params.top_p, rng=rng)
    out = [self._finish(c, params) for c in completions]
    self.usage.add(out)
    return out

  def _finish(self, c: gen_lib.Completion, params: SamplingParams) -> Generation:
    tokens, logprobs = c.tokens, c.logprobs
    stopped = c.stopped
    if stopped and tokens[-1] in self.tokenizer.eos_ids:
      tokens, logprobs = tokens[:-1], logprobs[:-1]   # eos is not part of the text
    text = self.tokenizer.decode(tokens)
    cuts = [text.find(s) for s in params.stop if s in text]
    if cuts:
      # Cut at the first stop string; keep the shortest token prefix covering the text.
      text, stopped = text[:min(cuts)], True
      n = next(n for n in range(len(tokens) + 1) if len(self.tokenizer.decode(tokens[:n])) >= len(text))
      tokens, logprobs = tokens[:n], logprobs[:n]
    return Generation(text=text, num_tokens=len(c.tokens), prompt_tokens=c.prompt_tokens,
                      finish_reason="stop" if stopped else "length",
                      logprobs=tuple(logprobs) if params.return_logprobs else None,
                      token_ids=tuple(tokens), truncated_prompt_tokens=c.truncated)


@functools.lru_cache(maxsize=4)
def _load(name: str, dtype_name: str, max_context: int | None) -> LocalLLM:
  backbone_name = LOCAL_MODELS.get(name, name)
  return LocalLLM(registry.load_backbone(backbone_name, jnp.dtype(dtype_name)),
                  max_context=max_context)


def load_local_llm(name: str = "smollm2-135m-instruct", dtype=jnp.float32,
                   max_context: int | None = 4096) -> LocalLLM:
  """Cached local LLM by name ("smollm2-135m-instruct", "tiny-llama", "hf:<dir>").

  ``max_context`` caps prompt + new tokens (longer prompts keep their end and
  report ``truncated_prompt_tokens``); None uses the model's full context.
  """
  if name not in LOCAL_MODELS and not name.startswith("hf:"):
    raise ValueError(f"unknown local model {name!r}; known: {sorted(LOCAL_MODELS)} or 'hf:<dir>'")
  return _load(name, jnp.dtype(dtype).name, max_context)
