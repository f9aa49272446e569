"""An OpenAI-compatible HTTP server behind the ``LLM`` interface.

  llm = OpenAICompatLLM("gpt-4o-mini")                 # $OPENAI_API_KEY, api.openai.com
  llm = OpenAICompatLLM("tiny-llama", "http://127.0.0.1:8000/v1")   # python -m optimas_jax.serve

Chat messages go to /chat/completions, plain prompts to /completions, one
HTTP request per answer (n=1) on a bounded thread pool; answers come back in
request order. Timeouts, 429 and 5xx are retried with capped exponential
backoff; any other 4xx fails at once. Answers are kept in a disk cache
(``cache.py``) and counted per component in a ``Ledger`` (``ledger.py``).

The API key is read once and kept only in memory: it is not in the repr,
errors, logs, the cache or a pickle (unpickling reads the env var again).
Standard library only (urllib).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Sequence

from absl import logging

from optimas_jax.core.seeds import row_seeds
from optimas_jax.llm import cache as cache_lib
from optimas_jax.llm import ledger as ledger_lib
from optimas_jax.llm.base import LLM, Generation, Request, SamplingParams, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class LLMServerError(RuntimeError):
  """A call that failed for good; ``status`` is the HTTP status (None: no answer)."""

  def __init__(self, message: str, status: int | None = None, attempts: int = 1):
    super().__init__(message)
    self.status, self.attempts = status, attempts


class _Secret:
  """Holds the API key; prints as <secret> so vars(), debuggers and logs never show it."""

  __slots__ = ("_value",)

  def __init__(self, value: str):
    self._value = value

  def reveal(self) -> str:
    return self._value

  def __repr__(self):
    return "<secret>"

  __str__ = __repr__

  def __reduce__(self):
    raise TypeError("API keys are not pickled; the owner re-reads its env var when unpickled")


class _Retryable(Exception):
  def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
    super().__init__(message)
    self.status, self.retry_after = status, retry_after


def _secret(value: str | None) -> _Secret | None:
  return _Secret(value) if value else None


def _check_request(i: int, r: Request) -> None:
  if isinstance(r, str):
    return
  if not isinstance(r, (list, tuple)) or not r or not all(
      isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in r):
    raise TypeError(f"requests[{i}]={r!r:.200}; expected a prompt string or a non-empty list "
                    "of {'role': ..., 'content': ...} messages")


def _is_loopback(url: str) -> bool:
  host = urllib.parse.urlsplit(url).hostname or ""
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


class OpenAICompatLLM(LLM):
  """Chat/completions over HTTP, cached on disk, with retries and a ledger.

  Args:
    model: the server's model name.
    base_url: up to and including "/v1"; default $OPENAI_BASE_URL, else OpenAI.
    api_key: default ``$<api_key_env>``; none sends no Authorization header.
    max_concurrency: HTTP requests in flight at once (across threads).
    timeout_s: per HTTP attempt. ``max_retries`` more attempts after the first,
      waiting ``backoff_s * 2**k`` capped at ``max_backoff_s`` (with jitter).
    cache: True (default path, see ``cache.default_path``), a path, a
      ``ResponseCache``, or False.
    ledger: shared ``Ledger`` (a fresh one by default); ``component`` is the
      name used when no ``ledger.component(...)`` block is active.
  """

  def __init__(self, model: str, base_url: str | None = None, *, api_key: str | None = None,
               api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 8,
               timeout_s: float = 60.0, max_retries: int = 4, backoff_s: float = 0.5,
               max_backoff_s: float = 8.0, cache: Any = True,
               ledger: ledger_lib.Ledger | None = None, component: str | None = None):
    super().__init__()
    if not model:
      raise ValueError("model is empty; pass the server's model name, e.g. 'gpt-4o-mini'")
    if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
      raise ValueError(f"max_concurrency={max_concurrency} (need >= 1), max_retries="
                       f"{max_retries} (need >= 0), timeout_s={timeout_s} (need > 0)")
    self.name = self.model = model
    self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
      raise ValueError(f"base_url={self.base_url!r}; expected http(s)://host[:port]/v1")
    self.api_key_env = api_key_env
    self._api_key = _secret(api_key if api_key is not None else os.environ.get(api_key_env))
    self.max_concurrency, self.timeout_s = max_concurrency, float(timeout_s)
    self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
    self.cache = self._open_cache(cache)
    self.ledger = ledger if ledger is not None else ledger_lib.Ledger()
    self.ledger.check_priced(model)
    self.component = component
    self._start()

  def _start(self):
    # Loopback servers skip $http_proxy: a proxy cannot reach our 127.0.0.1.
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(self.base_url) else []
    self._opener = urllib.request.build_opener(*handlers)
    self._pool = concurrent.futures.ThreadPoolExecutor(self.max_concurrency,
                                                       thread_name_prefix="openai-compat")

  @staticmethod
  def _open_cache(cache) -> cache_lib.ResponseCache | None:
    if cache is True:
      return cache_lib.ResponseCache()
    if cache is False or cache is None:
      return None
    if isinstance(cache, cache_lib.ResponseCache):
      return cache
    return cache_lib.ResponseCache(cache)

  def __repr__(self):
    key = "set" if self._api_key else "unset"
    return (f"OpenAICompatLLM(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key=<{key}, ${self.api_key_env}>)")

  def __getstate__(self):
    # Pickles (checkpoints) carry settings, never the key, the pool or the sqlite handle.
    state = {k: v for k, v in self.__dict__.items() if k not in ("_api_key", "_pool", "_opener")}
    state["cache"] = str(self.cache.path) if self.cache is not None else None
    state["usage"] = self.usage.state_dict()
    return state

  def __setstate__(self, state):
    cache_path, usage = state.pop("cache"), state.pop("usage")
    self.__dict__.update(state)
    self.usage = Usage()
    self.usage.load_state_dict(usage)
    self._api_key = _secret(os.environ.get(self.api_key_env))
    self.cache = cache_lib.ResponseCache(cache_path) if cache_path else None
    self._start()

  def state_dict(self) -> dict:
    """Usage and response-cache counters (the shared ledger saves itself; no key, no URL)."""
    state = super().state_dict()
    if self.cache is not None:
      state["response_cache"] = self.cache.state_dict()
    return state

  def load_state_dict(self, state: dict) -> None:
    super().load_state_dict(state)
    if self.cache is not None and "response_cache" in state:
      self.cache.load_state_dict(state["response_cache"])

  def close(self) -> None:
    self._pool.shutdown(wait=True)

  # -- generate -----------------------------------------------------------

  def generate(self, requests: Sequence[Request], params: SamplingParams = SamplingParams(),
               rng: Any = None, *, component: str | None = None) -> list[Generation]:
    """One answer per request, in order; ``rng`` as in ``LLM.generate`` (temperature > 0).

    Each request gets its own seed (``row_seeds``): sent to the server and
    part of its cache key, so a request's answer depends on its own seed
    only, and a rerun with the same seeds reads the same answers back.
    Identical requests with one shared int/key are distinct samples (rows
    fold in their index).
    """
    if isinstance(requests, str):
      raise TypeError("generate() takes a list of requests; wrap a single prompt in a list")
    for i, r in enumerate(requests):
      _check_request(i, r)
    if params.temperature > 0 and rng is None:
      raise ValueError("sampling (temperature > 0) needs rng: an int seed or a jax PRNG key")
    seeds = (row_seeds(rng, len(requests)) if params.temperature > 0
             else [None] * len(requests))
    name = component or ledger_lib.current_component(self.component)

    out: list[Generation | None] = [None] * len(requests)
    todo = []
    fingerprint = self.fingerprint() if self.cache is not None else ""
    for i, (r, seed) in enumerate(zip(requests, seeds)):
      key = (cache_lib.cache_key(self.model, r, params, seed, base_url=self.base_url,
                                 fingerprint=fingerprint)
             if self.cache is not None else None)
      hit = self.cache.get(key) if key else None
      if hit is not None:
        out[i] = hit
        self.ledger.record(self.model, hit.prompt_tokens, hit.num_tokens, component=name,
                           cached=True)
      else:
        todo.append((i, r, seed, key))
    futures = [self._pool.submit(self._answer, r, params, seed, key, name, fingerprint)
               for _, r, seed, key in todo]
    for (i, *_), f in zip(todo, futures):
      out[i] = f.result()
    return out

  def fingerprint(self) -> str:
    """The fingerprint the server reports for this model in GET /models ("" if none: a server
    that does not report one, or cannot be asked)."""
    try:
      req = urllib.request.Request(self.base_url + "/models", headers=self._headers())
      with self._opener.open(req, timeout=self.timeout_s) as resp:
        listing = json.loads(resp.read())
      for entry in listing.get("data") or ():
        if isinstance(entry, dict) and entry.get("id") == self.model:
          return str(entry.get("fingerprint") or "")
    except (OSError, ValueError, AttributeError, urllib.error.URLError):
      pass
    return ""

  def _answer(self, request: Request, params: SamplingParams, seed: int | None,
              key: str | None, component: str, fingerprint: str = "") -> Generation:
    chat = not isinstance(request, str)
    body: dict[str, Any] = {"model": self.model, "n": 1, "max_tokens": params.max_new_tokens,
                            "temperature": params.temperature, "top_p": params.top_p}
    if chat:
      body["messages"] = list(request)
    else:
      body["prompt"] = request
    if params.stop:
      body["stop"] = list(params.stop)
    if seed is not None:
      body["seed"] = seed
    if params.return_logprobs:
      body["logprobs"] = True if chat else 1
    path = "/chat/completions" if chat else "/completions"
    resp = self._post(path, body)
    g = self._parse(resp, chat, params, path)
    answered_by = str(resp.get("system_fingerprint") or "") if isinstance(resp, dict) else ""
    if key is not None and answered_by and answered_by != fingerprint:
      # Swapped between our GET /models and this answer: file it under what answered.
      key = cache_lib.cache_key(self.model, request, params, seed, base_url=self.base_url,
                                fingerprint=answered_by)
    if key is not None:
      self.cache.put(key, self.model, g)
    self.usage.add([g])
    self.ledger.record(self.model, g.prompt_tokens, g.num_tokens, component=component)
    return g

  def _parse(self, resp: dict, chat: bool, params: SamplingParams, path: str) -> Generation:
    try:
      choice = resp["choices"][0]
      text = (choice["message"]["content"] if chat else choice["text"]) or ""
      usage = resp.get("usage") or {}
      logprobs = None
      if params.return_logprobs:
        lp = choice.get("logprobs") or {}
        logprobs = tuple(float(t["logprob"]) for t in lp.get("content") or ()) if chat else \
            tuple(float(x) for x in lp.get("token_logprobs") or ())
    except (KeyError, IndexError, TypeError, ValueError) as e:
      raise LLMServerError(f"POST {self.base_url}{path}: unexpected response shape "
                           f"({type(e).__name__}: {e}); is it an OpenAI-compatible server?") from None
    return Generation(text=text, num_tokens=int(usage.get("completion_tokens", 0)),
                      prompt_tokens=int(usage.get("prompt_tokens", 0)),
                      finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                      logprobs=logprobs)

  # -- HTTP ---------------------------------------------------------------

  def _post(self, path: str, body: dict) -> dict:
    """POST with retries on timeouts, 429 and 5xx; everything else fails at once."""
    url = self.base_url + path
    data = json.dumps(body).encode()
    for attempt in range(1, self.max_retries + 2):
      try:
        return self._post_once(url, data)
      except _Retryable as e:
        if attempt > self.max_retries:
          raise LLMServerError(
              f"POST {url}: gave up after {attempt} attempts; last: {e}. Raise timeout_s "
              f"(now {self.timeout_s:g}) or max_retries (now {self.max_retries}), or check "
              "the server", status=e.status, attempts=attempt) from None
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        if e.retry_after is not None:
          delay = min(self.max_backoff_s, max(delay, e.retry_after))
        delay *= random.uniform(0.5, 1.0)    # jitter: parallel workers do not retry in lockstep
        logging.warning("POST %s attempt %d/%d: %s; retrying in %.2fs", url, attempt,
                        self.max_retries + 1, e, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")

  def _headers(self) -> dict[str, str]:
    h = {"Content-Type": "application/json", "User-Agent": "optimas-jax"}
    if self._api_key:
      h["Authorization"] = f"Bearer {self._api_key.reveal()}"
    return h

  def _redact(self, text: str) -> str:
    return text.replace(self._api_key.reveal(), "<secret>") if self._api_key else text

  def _post_once(self, url: str, data: bytes) -> dict:
    req = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
    try:
      with self._opener.open(req, timeout=self.timeout_s) as resp:
        raw = resp.read()
    except urllib.error.HTTPError as e:
      message = self._redact(_server_message(e))
      if e.code == 429 or e.code >= 500:
        raise _Retryable(f"HTTP {e.code}: {message}", e.code, _retry_after(e)) from None
      hint = {401: f"; check the API key (${self.api_key_env})",
              404: f"; check model={self.model!r} and base_url={self.base_url!r}"}.get(e.code, "")
      raise LLMServerError(f"POST {url}: HTTP {e.code}: {message}{hint}", e.code) from None
    except (TimeoutError, socket.timeout):
      raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
    except urllib.error.URLError as e:
      if isinstance(e.reason, (TimeoutError, socket.timeout)):
        raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
      raise LLMServerError(f"POST {url}: cannot reach the server ({e.reason}); is it running "
                           "and is base_url right?") from None
    except (ConnectionError, OSError) as e:
      raise LLMServerError(f"POST {url}: connection failed ({type(e).__name__}: {e})") from None
    try:
      return json.loads(raw)
    except ValueError:
      raise LLMServerError(f"POST {url}: response is not JSON: {raw[:200]!r}") from None


def _server_message(e: urllib.error.HTTPError) -> str:
  """The server's own words: OpenAI's {"error": {"message": ...}}, else the raw body."""
  try:
    raw = e.read().decode("utf-8", "replace")
  except OSError:
    return e.reason or ""
  try:
    err = json.loads(raw).get("error")
    return str(err.get("message") if isinstance(err, dict) else err)
  except (ValueError, AttributeError):
    return raw.strip()[:500] or str(e.reason)


def _retry_after(e: urllib.error.HTTPError) -> float | None:
  try:
    return float(e.headers.get("Retry-After"))
  except (TypeError, ValueError):
    return None
