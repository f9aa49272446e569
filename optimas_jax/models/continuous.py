"""Continuous (step-level) batching: requests join and leave a running decode batch.

``generate.Generator`` decodes a batch until its longest row is done, and a
request that arrives meanwhile waits for the whole batch. Here the KV cache
has ``slots`` rows that live on their own: between decode calls a finished
row's slot goes to the next waiting request (prefilled alone, its keys and
values copied into the slot), so a short answer returns as soon as it is
done and a new request starts within ``steps_per_call`` decode steps.

Cache layout: slot b holds its request's prompt from column 0 and each new
token right after it, so row b writes at its own column (its length) and
sees the columns before it. A call attends over the first W columns only,
W the power of two (>= 64) that holds the longest active row plus the
call's steps: decoding costs what the rows hold, not the slot's capacity.

A request samples as in the Generator: token i with ``fold_in(key, i)``,
its own temperature and top-p, so its tokens are the Generator's for the
same prompt and key (log-probs equal to float rounding). A call runs the
smallest power-of-two prefix of the slots that holds every active request
(a free slot is the lowest one), so a lone request does not pay for 32.
One compiled decode per (slot prefix, W), one prefill per prompt bucket.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import dataclasses
import queue
import threading
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from optimas_jax.models import llama
from optimas_jax.models.generate import (Completion, bucket_batch, bucket_length,
                                         categorical, check_sampling, first_argmax,
                                         top_p_filter)
from optimas_jax.models.tokenizer import pad_ids

MIN_SPAN = 64         # the shortest attention span a decode call compiles


def sample_rows(logits, keys, temperature, top_p):
  """``generate.sample`` with a temperature and top-p per row: (B,) tokens and log-probs.

  Row b is greedy when ``temperature[b] == 0`` and otherwise draws from
  softmax(logits / temperature), top-p truncated when ``top_p[b] < 1``, with
  ``keys[b]``; its log-prob is taken before truncation (as ``sample``).
  """
  greedy = temperature <= 0
  scale = jnp.where(greedy, 1.0, temperature)[:, None]
  scaled = logits / scale
  truncate = (top_p < 1.0) & ~greedy
  filtered = jax.lax.cond(
      jnp.any(truncate),
      lambda s: jnp.where(truncate[:, None], top_p_filter(s, top_p[:, None]), s),
      lambda s: s, scaled)
  # All-greedy batches skip the draw (a Gumbel sample over the vocabulary per row).
  drawn = jax.lax.cond(
      jnp.all(greedy), lambda: jnp.zeros(logits.shape[:1], jnp.int32),
      lambda: categorical(keys, filtered))
  token = jnp.where(greedy, first_argmax(logits), drawn)
  logp = jax.nn.log_softmax(scaled, axis=-1)
  return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def _prefill(module, params, ids, mask, last, key_data, temperature, top_p):
  """One request's right-padded prompt (1, L): its first token, log-prob and (1, L) cache.

  ``last`` is the index of the prompt's last real token (its logits start the decode).
  """
  length = ids.shape[1]
  cache = llama.init_cache(module.config, 1, length)
  causal = jnp.tril(jnp.ones((length, length), bool))
  visible = mask.astype(bool)[:, None, :] & causal[None]
  hidden, cache = module.apply(params, ids, jnp.arange(length)[None], visible, cache, 0,
                               method=module.forward_cached)
  logits = module.apply(params, hidden[:, last], method=module.project)
  key = jax.random.fold_in(jax.random.wrap_key_data(key_data), 0)
  token, logp = sample_rows(logits, key[None], temperature[None], top_p[None])
  return token[0], logp[0], cache


def _insert(cache, row_cache, slot):
  """``row_cache`` (1, L) written into ``slot`` from column 0."""
  return jax.tree.map(
      lambda c, r: jax.lax.dynamic_update_slice(c, r.astype(c.dtype), (slot, 0, 0, 0)),
      cache, row_cache)


def _decode(module, steps, width, span, params, cache, last, length, index, key_data,
            temperature, top_p):
  """``steps`` decode steps of slots [0, width) over columns [0, span).

  ``length`` (width,): the tokens each slot holds (where it writes next);
  ``index`` (width,): the index of the token each slot samples first (its
  key is folded with it). Returns (steps, width) tokens, log-probs, and the cache.
  """
  cols = jnp.arange(span)
  part = tuple(llama.cache_slots(kv, span, width) for kv in cache)
  keys = jax.random.wrap_key_data(key_data)

  def one(carry, j):
    part, last = carry
    at = length + j
    visible = (cols[None, :] <= at[:, None])[:, None, :]
    hidden, part = module.apply(params, last[:, None], at[:, None], visible, part, at,
                                method=module.forward_cached)
    logits = module.apply(params, hidden[:, 0], method=module.project)
    row_keys = jax.vmap(jax.random.fold_in)(keys, index + j)
    token, logp = sample_rows(logits, row_keys, temperature, top_p)
    return (part, token), (token, logp)

  (part, _), (tokens, logps) = jax.lax.scan(one, (part, last), jnp.arange(steps))
  cache = jax.tree.map(lambda c, p: jax.lax.dynamic_update_slice(c, p, (0, 0, 0, 0)),
                       cache, part)
  return tokens, logps, cache


@dataclasses.dataclass
class _Request:
  prompt: list[int]
  truncated: int
  max_new_tokens: int
  stops: frozenset
  temperature: float
  top_p: float
  key_data: np.ndarray
  future: concurrent.futures.Future
  tokens: list = dataclasses.field(default_factory=list)
  logprobs: list = dataclasses.field(default_factory=list)


class ContinuousDecoder:
  """Decodes submitted requests in a running batch of ``slots`` rows (a thread of its own).

  ``context``: columns per slot; a request's prompt, its new tokens and one
  call's steps must fit (prompts longer than the room keep their end, as in
  the Generator). ``room(max_new_tokens)`` is the prompt room of a request.
  """

  def __init__(self, module: llama.LlamaDecoder, params, pad_id: int, *, slots: int = 32,
               context: int = 1024, prompt_multiple: int = 64, steps_per_call: int = 4,
               max_traces: int | None = None):
    if slots < 1 or slots & (slots - 1):
      raise ValueError(f"slots={slots}; use a power of two (the active prefix is bucketed)")
    if context > module.config.max_position_embeddings:
      raise ValueError(f"context={context} > the model's {module.config.max_position_embeddings}")
    if steps_per_call < 1:
      raise ValueError(f"steps_per_call={steps_per_call}; must be >= 1")
    self.module, self.params, self.pad_id = module, params, int(pad_id)
    self.slots, self.context = slots, context
    self.prompt_multiple, self.steps_per_call = prompt_multiple, steps_per_call
    def prefill(*args):
      return _prefill(module, *args)

    def decode(*args):
      return _decode(module, *args)

    if max_traces is not None:
      prefill = chex.assert_max_traces(prefill, n=max_traces)
      decode = chex.assert_max_traces(decode, n=max_traces)
    self._prefill = jax.jit(prefill)
    self._insert = jax.jit(_insert, donate_argnums=0)
    self._decode = jax.jit(decode, static_argnums=(0, 1, 2), donate_argnums=4)
    # Decode programs by (width, span), compiled ahead of time on a thread of their own;
    # a call whose program is not ready runs on a ready larger one (more free rows, more
    # masked columns: the same tokens) instead of stalling every request for a compile.
    self._programs: dict[tuple[int, int], concurrent.futures.Future] = {}
    self._programs_lock = threading.Lock()
    self._to_compile: queue.Queue = queue.Queue()
    self._compiler_stopped = False
    self._compiler = threading.Thread(target=self._compile_loop, name="continuous-compiler",
                                      daemon=True)
    self._cache = llama.init_cache(module.config, slots, context)
    key_shape = jax.random.key_data(jax.random.key(0)).shape
    self._key_data = np.zeros((slots,) + key_shape, np.uint32)
    self._last = np.zeros(slots, np.int32)
    self._length = np.zeros(slots, np.int32)
    self._index = np.zeros(slots, np.int32)
    self._temperature = np.zeros(slots, np.float32)
    self._top_p = np.ones(slots, np.float32)
    self._rows: list[_Request | None] = [None] * slots
    self._pending: collections.deque = collections.deque()
    self._cv = threading.Condition()
    self._closed = False
    self.stats = collections.Counter()
    self._thread = threading.Thread(target=self._loop, name="continuous-decoder", daemon=True)
    shaped = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    self._shapes = (jax.tree.map(shaped, params), jax.tree.map(shaped, self._cache))
    self._compiler.start()
    # A compile still running when the interpreter exits aborts it: stop the compiler first.
    atexit.register(self._stop_compiler)
    self._want(slots, context)          # the widest program first: it covers every call
    self._thread.start()

  # -- the client side ----------------------------------------------------------

  def room(self, max_new_tokens: int) -> int:
    """Prompt tokens a request with ``max_new_tokens`` may keep (< 1: it cannot run here)."""
    return self.context - max_new_tokens - self.steps_per_call

  def submit(self, prompt: Sequence[int], *, max_new_tokens: int, stop_ids: Sequence[int] = (),
             temperature: float = 0.0, top_p: float = 1.0, key=None
             ) -> concurrent.futures.Future:
    """A future of the request's ``Completion``; ``key`` (a typed PRNG key) when sampling."""
    if max_new_tokens < 1 or self.room(max_new_tokens) < 1:
      raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a "
                       f"{self.context}-column slot; use the Generator or a larger context")
    check_sampling(temperature, top_p, key, "PRNG")
    room = self.room(max_new_tokens)
    prompt = list(prompt)
    kept = prompt[len(prompt) - min(len(prompt), room):] or [self.pad_id]
    key = key if key is not None else jax.random.key(0)
    request = _Request(kept, len(prompt) - len(kept) if prompt else 0, max_new_tokens,
                       frozenset(int(s) for s in stop_ids), float(temperature), float(top_p),
                       np.asarray(jax.random.key_data(key)), concurrent.futures.Future())
    with self._cv:
      if self._closed:
        raise RuntimeError("the decoder is closed")
      self._pending.append(request)
      self._cv.notify()
    return request.future

  def close(self) -> None:
    with self._cv:
      self._closed = True
      self._cv.notify()
    self._thread.join(timeout=30)
    self._stop_compiler()
    atexit.unregister(self._stop_compiler)

  def _stop_compiler(self) -> None:
    """Queued programs are dropped; the one compiling finishes first."""
    self._compiler_stopped = True
    self._to_compile.put(None)
    self._compiler.join(timeout=120)

  # -- compiled programs ---------------------------------------------------------

  def _program(self, width: int, span: int):
    """(compiled decode, width, span) for a call over ``width`` slots and ``span``
    columns: its own program when compiled, else the smallest ready one that covers
    it while its own compiles, else (nothing covers it yet) its own, waited for."""
    own = self._want(width, span)
    with self._programs_lock:
      ready = [k for k, f in self._programs.items()
               if f.done() and f.exception() is None and k[0] >= width and k[1] >= span]
    if own.done() or not ready:
      return own.result(), width, span
    w, s = min(ready, key=lambda k: k[0] * k[1])
    self.stats["covered_calls"] += 1
    return self._programs[(w, s)].result(), w, s

  def _want(self, width: int, span: int) -> concurrent.futures.Future:
    """The future of the (width, span) program, queued for compiling on first request."""
    with self._programs_lock:
      own = self._programs.get((width, span))
      if own is None:
        own = self._programs[(width, span)] = concurrent.futures.Future()
        self._to_compile.put((width, span))
      return own

  def _compile_loop(self) -> None:
    while True:
      key = self._to_compile.get()
      if key is None or self._compiler_stopped:
        return
      future = self._programs[key]
      try:
        future.set_result(self._compile(*key))
        self.stats["programs"] += 1
      except Exception as e:  # pylint: disable=broad-except
        future.set_exception(e)

  def _compile(self, width: int, span: int):
    """The decode program of (width, span), lowered from shapes and compiled."""
    rows = lambda a: jax.ShapeDtypeStruct((width,) + a.shape[1:], a.dtype)
    params, cache = self._shapes
    return self._decode.lower(
        self.steps_per_call, width, span, params, cache, rows(self._last), rows(self._length),
        rows(self._index), rows(self._key_data), rows(self._temperature),
        rows(self._top_p)).compile()

  # -- the decoder thread --------------------------------------------------------

  def _loop(self):
    while True:
      with self._cv:
        while not self._closed and not self._pending and not any(self._rows):
          self._cv.wait()
        if self._closed:
          break
      try:
        self._admit()
        if any(self._rows):
          self._advance()
      except Exception as e:  # pylint: disable=broad-except
        self._fail_all(e)
    self._fail_all(RuntimeError("the decoder was closed"))

  def _fail_all(self, error: Exception) -> None:
    """Every waiting and running request gets ``error``; the slots are emptied."""
    with self._cv:
      waiting, self._pending = list(self._pending), collections.deque()
    for r in waiting + [r for r in self._rows if r is not None]:
      if not r.future.done():
        r.future.set_exception(error)
    self._rows = [None] * self.slots
    self._cache = llama.init_cache(self.module.config, self.slots, self.context)

  def _admit(self) -> None:
    """Waiting requests into free slots (the lowest first): prefill, then copy the cache."""
    for slot in range(self.slots):
      if self._rows[slot] is not None:
        continue
      with self._cv:
        if not self._pending:
          return
        request = self._pending.popleft()
      length = min(bucket_length(len(request.prompt), self.prompt_multiple),
                   self.context)
      ids, mask = pad_ids([request.prompt], self.pad_id, length=length, side="right")
      token, logp, row_cache = self._prefill(
          self.params, ids, mask, np.int32(len(request.prompt) - 1), request.key_data,
          np.float32(request.temperature), np.float32(request.top_p))
      self.stats["admitted"] += 1
      if self._take(request, [int(token)], [float(logp)]):
        continue                              # done at its first token: the slot stays free
      self._cache = self._insert(self._cache, row_cache, np.int32(slot))
      self._rows[slot] = request
      self._last[slot] = request.tokens[-1]
      self._length[slot] = len(request.prompt)
      self._index[slot] = 1
      self._key_data[slot] = request.key_data
      self._temperature[slot], self._top_p[slot] = request.temperature, request.top_p

  def _advance(self) -> None:
    """One compiled call of ``steps_per_call`` steps over the occupied slot prefix."""
    occupied = [i for i, r in enumerate(self._rows) if r is not None]
    free = np.array([r is None for r in self._rows])
    length = np.where(free, 0, self._length).astype(np.int32)   # a free slot writes at 0
    span = min(max(MIN_SPAN, bucket_batch(int(length.max()) + self.steps_per_call)),
               self.context)
    decode, width, span = self._program(bucket_batch(occupied[-1] + 1), span)
    tokens, logps, self._cache = decode(
        self.params, self._cache, self._last[:width], length[:width],
        self._index[:width], self._key_data[:width], self._temperature[:width],
        self._top_p[:width])
    tokens, logps = np.asarray(tokens), np.asarray(logps)
    self.stats["calls"] += 1
    self.stats["steps"] += self.steps_per_call
    self.stats["max_active"] = max(self.stats["max_active"], len(occupied))
    for slot in occupied:
      request = self._rows[slot]
      if self._take(request, tokens[:, slot].tolist(), logps[:, slot].tolist()):
        self._rows[slot] = None
      else:
        self._last[slot] = tokens[-1, slot]
        self._length[slot] += self.steps_per_call
        self._index[slot] += self.steps_per_call

  def _take(self, request: _Request, tokens: list[int], logps: list[float]) -> bool:
    """Appends new tokens up to a stop or the limit; resolves the future when done."""
    for token, logp in zip(tokens, logps):
      request.tokens.append(token)
      request.logprobs.append(logp)
      stopped = token in request.stops
      if stopped or len(request.tokens) == request.max_new_tokens:
        self.stats["completed"] += 1
        request.future.set_result(Completion(
            tokens=request.tokens, logprobs=request.logprobs, stopped=stopped,
            prompt_tokens=len(request.prompt), truncated=request.truncated))
        return True
    return False
