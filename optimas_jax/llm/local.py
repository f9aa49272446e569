"""Local LLM backend: the JAX Llama decoder behind the ``LLM`` interface."""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import threading
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optimas_jax.llm.base import LLM, Generation, Request, SamplingParams
from optimas_jax.models import continuous as continuous_lib
from optimas_jax.models import generate as gen_lib
from optimas_jax.models import registry
from optimas_jax.models import lora

# Merged base + adapter weights kept per adapter (each is a full set of the
# targeted kernels: 2 for the live policy and one it is compared with).
MERGED_CACHE_SIZE = 2

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
    self._merged = collections.OrderedDict()   # adapter leaf ids -> (leaves, merged params)
    self.merged_cache_size = MERGED_CACHE_SIZE  # a server raises it to its adapters + 1
    self._merged_lock = threading.Lock()
    self._decoder: continuous_lib.ContinuousDecoder | None = None
    self._decoder_lock = threading.Lock()

  def continuous_decoder(self, context: int = 1024,
                         slots: int | None = None) -> continuous_lib.ContinuousDecoder:
    """The base model's continuous-batching decoder, made on first use and then kept
    (its KV cache of ``slots`` x ``context`` columns is allocated once). ``slots``
    (default: the generator's ``max_batch``) is rounded up to a power of two."""
    g = self.generator
    context = min(context, g.max_context)
    slots = gen_lib.bucket_batch(slots or g.max_batch)
    with self._decoder_lock:
      if self._decoder is None:
        self._decoder = continuous_lib.ContinuousDecoder(
            g.module, g.params, g.pad_id, slots=slots, context=context,
            prompt_multiple=g.prompt_multiple)
      elif (self._decoder.context, self._decoder.slots) != (context, slots):
        raise ValueError(f"the continuous decoder runs with context={self._decoder.context}, "
                         f"slots={self._decoder.slots}; asked for {context}, {slots}")
      return self._decoder

  def continuous_stats(self) -> dict[str, int]:
    """The continuous decoder's counters (admitted, completed, calls, steps, max_active)."""
    with self._decoder_lock:
      return dict(self._decoder.stats) if self._decoder is not None else {}

  def submit(self, request: Request, params: SamplingParams = SamplingParams(), key=None, *,
             context: int = 1024, slots: int | None = None) -> concurrent.futures.Future | None:
    """One request into the running batch of ``continuous_decoder(context, slots)``: a
    future of its ``Generation`` (the same as ``generate`` gives it with ``key``), or None
    when its prompt and new tokens do not fit a slot (use ``generate``)."""
    decoder = self.continuous_decoder(context, slots)
    prompt = self.tokenizer.encode(self.render(request), add_special_tokens=False)
    if len(prompt) > decoder.room(params.max_new_tokens):
      return None
    inner = decoder.submit(prompt, max_new_tokens=params.max_new_tokens,
                           stop_ids=self._stop_ids(params.stop), temperature=params.temperature,
                           top_p=params.top_p, key=key)
    outer: concurrent.futures.Future = concurrent.futures.Future()

    def finish(done: concurrent.futures.Future) -> None:
      try:
        generation = self._finish(done.result(), params)
      except Exception as e:  # pylint: disable=broad-except
        outer.set_exception(e)
        return
      self.usage.add([generation])
      outer.set_result(generation)

    inner.add_done_callback(finish)
    return outer

  def weights(self, adapter=None) -> tuple:
    """(params, unmerged adapter or None) that run base + ``adapter`` as training does
    (lora.sampling_mode): merged for a float32 base, unmerged for a lower precision."""
    if adapter is None:
      return self.generator.params, None
    if lora.sampling_mode(lora.base_dtype(self.generator.params)) == "merged":
      return self.variables(adapter), None
    lora.check_compatible(adapter, self.generator.params, f"adapter for {self.name}")
    return self.generator.params, adapter

  def variables(self, adapter=None):
    """The decoder weights with ``adapter`` (models.lora) merged in; the base when None.

    The adapter is checked against the base weights first (a ValueError
    names both digests). Merged weights are cached per adapter object (its
    leaves' identities; adapters are immutable values), so repeated calls
    with the same adapter merge once.
    """
    if adapter is None:
      return self.generator.params
    leaves = jax.tree.leaves(adapter)
    key = tuple(map(id, leaves))
    with self._merged_lock:
      hit = self._merged.get(key)
      if hit is not None and all(a is b for a, b in zip(hit[0], leaves)):
        self._merged.move_to_end(key)
        return hit[1]
    lora.check_compatible(adapter, self.generator.params, f"adapter for {self.name}")
    merged = lora.merge(self.generator.params, adapter)
    with self._merged_lock:
      self._merged[key] = (leaves, merged)   # holding the leaves keeps their ids unique
      while len(self._merged) > self.merged_cache_size:
        self._merged.popitem(last=False)
    return merged

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
               rng: Any = None, adapter=None) -> list[Generation]:
    """See ``LLM.generate``; ``rng`` (per-request keys or one key) goes to the decoder as is.

    ``adapter`` (a models.lora adapter of this model) samples from base +
    adapter; ``Generation.token_ids`` / ``logprobs`` (with
    ``params.return_logprobs``) are the sampled ids and their log-probs.
    """
    if isinstance(requests, str):
      raise TypeError("generate() takes a list of requests; wrap a single prompt in a list")
    prompts = self.tokenizer.encode_batch([self.render(r) for r in requests],
                                          add_special_tokens=False)
    weights, unmerged = self.weights(adapter)
    completions = self.generator.generate_ids(
        prompts, max_new_tokens=params.max_new_tokens, stop_ids=self._stop_ids(params.stop),
        temperature=params.temperature, top_p=params.top_p, rng=rng,
        params=weights, adapter=unmerged)
    out = [self._finish(c, params) for c in completions]
    self.usage.add(out)
    return out

  def option_logprobs(self, requests: Sequence[Request], options: Sequence[str],
                      prefix: str = "", adapter=None) -> np.ndarray:
    """(B, len(options)) log-likelihood of each option as the start of the reply.

    The reply starts with ``prefix`` (e.g. "Answer:"), then the option's
    tokens; one forward pass per batch and no decoding, so a small model
    answers a closed question by likelihood instead of by free text it may
    not format. ``adapter``: score with base + that models.lora adapter.
    """
    variables, unmerged = self.weights(adapter)
    option_ids = [self.tokenizer.encode(o, add_special_tokens=False) for o in options]
    if not options or any(not o for o in option_ids):
      raise ValueError(f"options {list(options)}: give non-empty strings")
    width = max(map(len, option_ids))
    prompts = self.tokenizer.encode_batch([self.render(r) + prefix for r in requests],
                                          add_special_tokens=False)
    room = self.generator.max_context - width
    rows, starts, targets = [], [], []
    for p in prompts:
      p = p[-room:]
      for o in option_ids:
        rows.append(p + o)
        starts.append(len(p) - 1)     # the position whose logits predict the option's 1st token
        targets.append(o + [0] * (width - len(o)))
    lengths = [len(o) for o in option_ids] * len(prompts)
    out = []
    step = self.generator.max_batch
    for lo in range(0, len(rows), step):
      chunk = rows[lo:lo + step]
      b = gen_lib.bucket_batch(len(chunk))
      length = gen_lib.bucket_length(max(map(len, chunk)), self.generator.prompt_multiple)
      ids = np.full((b, length), self.generator.pad_id, np.int32)
      mask = np.zeros((b, length), np.int32)
      for i, r in enumerate(chunk):   # right-padded rows
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
      pad = b - len(chunk)
      start = np.array(starts[lo:lo + step] + [0] * pad, np.int32)
      target = np.array(targets[lo:lo + step] + [[0] * width] * pad, np.int32)
      valid = np.arange(width)[None] < np.array(lengths[lo:lo + step] + [0] * pad)[:, None]
      with self.generator._lock:
        logp = _sequence_logprobs(self.generator.module, variables, unmerged, ids, mask,
                                  start, target, valid)
      out.append(np.asarray(logp)[: len(chunk)])
    self.usage.add([Generation("", 0, len(p), "stop") for p in prompts])
    flat = np.concatenate(out) if out else np.zeros((0,), np.float32)
    return flat.reshape(len(prompts), len(options))

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


@functools.partial(jax.jit, static_argnums=0)
def _sequence_logprobs(module, params, adapter, ids, mask, start, target, valid):
  """Sum of log p(target[t] | ids[:start + t + 1]) over the valid t of each row
  (``adapter``: applied unmerged, or None)."""
  apply = gen_lib.applier(module, params, adapter)
  hidden = apply(ids, mask, method=module.hidden_states)
  positions = start[:, None] + jnp.arange(target.shape[1])[None]
  at = jnp.take_along_axis(hidden, jnp.minimum(positions, ids.shape[1] - 1)[..., None], axis=1)
  logp = jax.nn.log_softmax(apply(at, method=module.project), axis=-1)
  picked = jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
  return jnp.where(valid, picked, 0.0).sum(axis=1)


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
