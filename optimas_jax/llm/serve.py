"""An OpenAI-compatible HTTP server over a local JAX model.

  python -m optimas_jax.serve --model=smollm2-135m-instruct --port=8000   # a shim for main()
  curl -s localhost:8000/v1/chat/completions -d '{"model": "smollm2-135m-instruct",
       "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 16}'

POST /v1/chat/completions and /v1/completions, GET /v1/models, /v1/stats
(batch counters) and /health.

LoRA adapters (models/lora.py) are served as vLLM serves them: each loaded
adapter is a model of its own name in /v1/models, a request picks one by
its ``model`` field, and ``POST /v1/load_lora_adapter`` {"lora_name",
"lora_path"} loads (or replaces) one at run time without a restart
(``/v1/unload_lora_adapter`` {"lora_name"} drops it). An adapter trained on
other base weights than the served ones is refused (their digests differ). Requests that arrive within
``--batch_window_ms`` of each other (up to ``--max_batch``) are decoded in
one ``LLM.generate`` call per distinct set of sampling params; with
``--scheduler=continuous`` (the default) a base-model request that fits
``--continuous_context`` instead joins the running batch of a step-level
decoder (models/continuous.py) and returns as soon as its own answer is done.

Each request samples with its own key, from its own ``seed`` (choice i of
``n`` folds in i), so an answer never depends on the requests it was batched
with: the same seed gives the same text alone or batched (``request_key``).
A request without a seed draws a fresh one, unless the server has a
``--seed``: then its seed is derived from that, the request's content and
how many identical requests came before it, so a client that sends no seeds
(DSPy, GEPA, TextGrad) gets the same answers when a run is repeated.

Bounded under load: at most ``--max_queue`` answers wait for the decoder and
``--max_inflight`` HTTP requests are handled at once; past either the server
answers 429 (clients retry). Run-time adapter loading is off unless
``--adapter_root`` names the one folder adapters may be loaded from (and it
sits behind the API key when one is set); ``--lora`` at start-up is the
operator's own. Every model in /v1/models carries a ``fingerprint`` (a digest
of the weights that answer: the base, or the base and the adapter), and each
completion returns it as ``system_fingerprint``, so a client's response cache
never serves one adapter's answer for another's under the same name.

``--delay_ms``, ``--fail_status`` and ``--fail_count`` inject slowness and
errors for client tests.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import hashlib
import http.server
import json
import os
import queue
import secrets
import sys
import threading
import time
import traceback
import uuid
from typing import Any

import jax
import numpy as np

from absl import logging

from optimas_jax.core.keys import canonical_json
from optimas_jax.core.seeds import derive_seed
from optimas_jax.llm.base import LLM, Generation, SamplingParams

MAX_BODY_BYTES = 16 << 20
# "continuous": base-model requests join a running decode batch (models/continuous.py);
# "window": requests arriving within --batch_window_ms are decoded together.
SCHEDULERS = ("continuous", "window")
_ROLES = ("system", "user", "assistant", "tool")


class BadRequest(Exception):
  """A client error: answered with ``status`` and the offending ``param``."""

  def __init__(self, message: str, param: str | None = None, status: int = 400,
               kind: str = "invalid_request_error"):
    super().__init__(message)
    self.message, self.param, self.status, self.kind = message, param, status, kind


# -- batching -----------------------------------------------------------------

def request_key(seed: int, choice: int = 0):
  """The typed PRNG key of choice ``choice`` of a request with ``seed``.

  Choice 0 of a seed in [0, 2**32) is ``jax.random.key(seed)``, so a client
  can replay it locally; other 64-bit seeds (negative ones too) fold in
  their high word, and choice i > 0 folds in i.
  """
  import jax  # the HTTP front and its tests stay importable without initialising JAX
  seed %= 1 << 64
  key = jax.random.key(seed & 0xFFFFFFFF)
  if seed >> 32:
    key = jax.random.fold_in(key, seed >> 32)
  return jax.random.fold_in(key, choice) if choice else key


@dataclasses.dataclass
class _Job:
  request: Any
  params: SamplingParams
  seed: int          # the request's seed (drawn fresh when the client sent none)
  choice: int        # which of the request's answers this job is
  future: concurrent.futures.Future
  adapter: tuple[str, Any] | None = None   # (name, adapter pytree) or the base model


class Busy(Exception):
  """The decoder's queue is full: the request is answered 429."""


class Batcher:
  """Gathers requests for a short window and decodes each params-group in one call.

  With ``continuous_context`` (and an LLM that has ``submit``, the local one),
  a base-model request whose prompt and new tokens fit that many columns
  joins the running batch of the LLM's continuous decoder instead
  (models/continuous.py: it starts within a few decode steps and returns
  when its own answer is done); adapter requests and longer ones take the
  window.
  """

  def __init__(self, llm: LLM, window_ms: float = 20.0, max_batch: int = 32,
               max_queue: int = 1024, continuous_context: int = 0):
    self.llm, self.window_s, self.max_batch = llm, window_ms / 1000, max_batch
    self.max_queue = max_queue
    self.continuous_context = continuous_context if hasattr(llm, "submit") else 0
    self._queue: queue.Queue = queue.Queue()
    self._waiting = 0                    # answers queued or being decoded
    self._lock = threading.Lock()
    self.batches = self.generated = self.largest_batch = 0
    self._closed = False
    self._thread = threading.Thread(target=self._loop, name="serve-batcher", daemon=True)
    self._thread.start()

  def generate(self, requests: list, params: SamplingParams, seed: int | None,
               adapter: tuple[str, Any] | None = None) -> list[Generation]:
    """Blocks until every answer of this HTTP call is decoded (possibly with others').

    ``requests`` are the call's answers in order (a prompt repeated ``n``
    times gives n); answer i samples with ``request_key(seed, i)``.
    ``adapter`` (name, pytree): decode with that LoRA adapter on the base.
    """
    if self._closed:
      raise RuntimeError("the server is shutting down")
    seed = seed if seed is not None else secrets.randbits(64)
    jobs = [_Job(r, params, seed, i, concurrent.futures.Future(), adapter)
            for i, r in enumerate(requests)]
    with self._lock:                     # all of a call's answers are queued, or none
      if self._waiting + len(jobs) > self.max_queue:
        raise Busy(f"{self._waiting} answers are waiting (max_queue={self.max_queue})")
      self._waiting += len(jobs)
    try:
      joined = 0
      for j in jobs:
        running = self._join_running_batch(j)
        if running is None:
          self._queue.put(j)
        else:
          j.future, joined = running, joined + 1
      answers = [j.future.result() for j in jobs]
      with self._lock:
        self.generated += joined           # the window's answers are counted by _run
      return answers
    finally:
      with self._lock:
        self._waiting -= len(jobs)

  def _join_running_batch(self, job: _Job) -> concurrent.futures.Future | None:
    """The job's future from the continuous decoder, or None (it takes the window)."""
    if not self.continuous_context or job.adapter is not None:
      return None
    key = request_key(job.seed, job.choice) if job.params.temperature > 0 else None
    return self.llm.submit(job.request, job.params, key, context=self.continuous_context,
                           slots=self.max_batch)

  def continuous_stats(self) -> dict[str, int]:
    stats = self.llm.continuous_stats() if self.continuous_context else {}
    return {f"continuous_{k}": stats.get(k, 0)
            for k in ("admitted", "completed", "calls", "steps", "max_active")}

  def close(self) -> None:
    self._closed = True
    self._queue.put(None)
    self._thread.join(timeout=10)
    # Late arrivals (e.g. a handler that slept through --delay_ms) must not wait forever.
    while True:
      try:
        job = self._queue.get_nowait()
      except queue.Empty:
        return
      if job is not None:
        job.future.set_exception(RuntimeError("the server shut down"))

  def _loop(self):
    while True:
      first = self._queue.get()
      if first is None:
        return
      jobs, closing = [first], False
      deadline = time.monotonic() + self.window_s
      while len(jobs) < self.max_batch:
        try:
          job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
          break
        if job is None:
          closing = True
          break
        jobs.append(job)
      # One decode per (sampling params, adapter): a batch shares its weights.
      groups = collections.defaultdict(list)
      for j in jobs:
        groups[(j.params, None if j.adapter is None else id(j.adapter[1]))].append(j)
      for (params, _), group in groups.items():
        self._run(params, group)
      if closing:
        return

  def _run(self, params: SamplingParams, jobs: list[_Job]) -> None:
    try:
      keys = None
      if params.temperature > 0:
        import jax.numpy as jnp
        # One key per row, from its own request: batch-mates cannot change a row's sample.
        keys = jnp.stack([request_key(j.seed, j.choice) for j in jobs])
      adapter = jobs[0].adapter
      kwargs = {} if adapter is None else {"adapter": adapter[1]}
      gens = self.llm.generate([j.request for j in jobs], params, keys, **kwargs)
      with self._lock:
        self.batches += 1
        self.generated += len(jobs)
        self.largest_batch = max(self.largest_batch, len(jobs))
      for j, g in zip(jobs, gens):
        j.future.set_result(g)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("batch of %d failed", len(jobs))
      for j in jobs:
        if not j.future.done():
          j.future.set_exception(e)


# -- request parsing ----------------------------------------------------------

def _number(body: dict, field: str, default: float, lo: float, hi: float,
            lo_open: bool = False) -> float:
  v = body.get(field, default)
  if v is None:
    v = default
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
      (lo < v if lo_open else lo <= v) and v <= hi):
    rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
    raise BadRequest(f"'{field}' must be a number in {rng}; got {v!r}", field)
  return float(v)


def _integer(body: dict, field: str, default: int | None, lo: int, hi: int) -> int | None:
  v = body.get(field, default)
  if v is None:
    return default
  if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
    raise BadRequest(f"'{field}' must be an integer in [{lo}, {hi}]; got {v!r}", field)
  return v


def _stop(body: dict) -> tuple[str, ...]:
  stop = body.get("stop")
  if stop is None:
    return ()
  if isinstance(stop, str):
    stop = [stop]
  if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
    raise BadRequest(f"'stop' must be a string or a list of strings; got {stop!r:.100}", "stop")
  return tuple(s for s in stop if s)


def _messages(body: dict) -> list[dict]:
  msgs = body.get("messages")
  if not isinstance(msgs, list) or not msgs:
    raise BadRequest("'messages' must be a non-empty list of {role, content} objects", "messages")
  out = []
  for i, m in enumerate(msgs):
    field = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in _ROLES:
      raise BadRequest(f"'{field}.role' must be one of {list(_ROLES)}", f"{field}.role")
    content = m.get("content")
    if isinstance(content, list):     # [{"type": "text", "text": ...}, ...]
      if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                 for p in content):
        raise BadRequest(f"'{field}.content' parts must be {{'type': 'text', 'text': str}}; "
                         "this server takes text only", f"{field}.content")
      content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
      raise BadRequest(f"'{field}.content' must be a string", f"{field}.content")
    out.append({"role": m["role"], "content": content})
  return out


def _prompts(body: dict) -> list[str]:
  prompt = body.get("prompt")
  if isinstance(prompt, str):
    return [prompt]
  if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
    return prompt
  raise BadRequest("'prompt' must be a string or a non-empty list of strings (token ids are "
                   "not supported)", "prompt")


def _parse_json(raw: bytes) -> dict:
  try:
    body = json.loads(raw)
  except ValueError as e:
    raise BadRequest(f"body is not valid JSON: {e}") from None
  if not isinstance(body, dict):
    raise BadRequest("body must be a JSON object")
  return body


# -- the server ---------------------------------------------------------------

class Server(http.server.ThreadingHTTPServer):
  """The HTTP front: parses, injects test faults, hands work to the ``Batcher``."""

  daemon_threads = True

  def __init__(self, llm: LLM, model_name: str, host: str = "127.0.0.1", port: int = 8000, *,
               batch_window_ms: float = 20.0, max_batch: int = 32, delay_ms: float = 0.0,
               fail_status: int = 0, fail_count: int = 0, api_key: str | None = None,
               seed: int | None = None, max_queue: int = 1024, max_inflight: int = 64,
               max_seen: int = 1 << 16, adapter_root: str | None = None,
               scheduler: str = "continuous", continuous_context: int = 1024):
    super().__init__((host, port), _Handler)
    self.seed = seed
    # Repeat counts by request digest, the oldest forgotten past `max_seen` (a forgotten
    # request's next repeat samples as its first did).
    self._seen_requests: collections.OrderedDict = collections.OrderedDict()
    self.max_seen = max_seen
    self.inflight = threading.BoundedSemaphore(max_inflight)
    self.adapter_root = os.path.realpath(adapter_root) if adapter_root else None
    self.llm, self.model_name = llm, model_name
    if scheduler not in SCHEDULERS:
      raise ValueError(f"scheduler={scheduler!r}; use one of {SCHEDULERS}")
    self.scheduler = scheduler
    self.batcher = Batcher(llm, batch_window_ms, max_batch, max_queue,
                           continuous_context if scheduler == "continuous" else 0)
    self.max_batch, self.delay_s = max_batch, delay_ms / 1000
    self.fail_status, self.fail_count = fail_status, fail_count
    self._api_key = api_key
    self.created = int(time.time())
    tokenizer = getattr(llm, "tokenizer", None)
    self.token_text = (lambda t: tokenizer.decode([t])) if tokenizer else (lambda t: "")
    generator = getattr(llm, "generator", None)
    self.max_context = getattr(generator, "max_context", None)
    self._lock = threading.Lock()
    self.counts = collections.Counter()
    self._thread: threading.Thread | None = None
    self.adapters: dict[str, tuple[str, Any]] = {}     # name -> (path, adapter pytree)
    self._base_digest: str | None = None

  def seed_of(self, seed: int | None, content) -> int | None:
    """A request's seed: its own, else (with a server seed) one derived from
    ``content`` and its repeat count, else None (the batcher draws one)."""
    if seed is not None or self.seed is None:
      return seed
    key = canonical_json(content)
    # Counted by digest: a long-lived server must not keep every prompt it saw.
    digest = hashlib.sha256(key.encode()).digest()
    with self._lock:
      repeat = self._seen_requests.pop(digest, 0)
      self._seen_requests[digest] = repeat + 1
      while len(self._seen_requests) > self.max_seen:
        self._seen_requests.popitem(last=False)
    return derive_seed(self.seed, "request", key, repeat)

  def base_digest(self) -> str:
    """Digest of the served base weights (what an adapter must have been trained on)."""
    from optimas_jax.models import lora
    if self._base_digest is None:
      self._base_digest = lora.base_digest(self.llm.generator.params)
    return self._base_digest

  def fingerprint(self, adapter=None) -> str:
    """What answers a request: the base weights' digest, or it and the adapter's."""
    if getattr(self.llm, "generator", None) is None:
      return hashlib.sha256(f"{type(self.llm).__name__}:{self.model_name}".encode()
                            ).hexdigest()[:32]
    if adapter is None:
      return self.base_digest()[:32]
    digest = hashlib.sha256(self.base_digest().encode())
    for leaf in jax.tree.leaves(adapter):
      digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:32]

  def load_adapter_request(self, name: str, path: str) -> None:
    """A run-time load (HTTP): only from inside ``adapter_root``."""
    if self.adapter_root is None:
      raise BadRequest("run-time adapter loading is off; start the server with "
                       "--adapter_root=FOLDER to load adapters from that folder", "lora_path",
                       403, "permission_error")
    real = os.path.realpath(path)
    if os.path.commonpath([real, self.adapter_root]) != self.adapter_root:
      raise BadRequest(f"lora_path={path!r} is outside the adapter root", "lora_path", 403,
                       "permission_error")
    self.load_adapter(name, real)

  def load_adapter(self, name: str, path: str) -> None:
    """Loads (or replaces) adapter ``name`` from ``path``; requests use it from now on."""
    from optimas_jax.models import lora
    if not name or name == self.model_name:
      raise BadRequest(f"'lora_name' must be a non-empty name other than the base model "
                       f"{self.model_name!r}", "lora_name")
    if getattr(self.llm, "generator", None) is None:
      raise BadRequest("this backend serves no local decoder; LoRA adapters need one",
                       "lora_path")
    try:
      adapter, _ = lora.load_adapter(path)
    except (OSError, ValueError, KeyError) as e:
      raise BadRequest(f"cannot load adapter from lora_path={path!r}: {e}", "lora_path") from None
    if lora.adapter_digest(adapter) != self.base_digest():
      raise BadRequest(f"adapter {name!r} was trained on base weights "
                       f"{lora.adapter_digest(adapter)[:16]}..., but this server serves "
                       f"{self.model_name!r} with digest {self.base_digest()[:16]}...; train "
                       "or convert the adapter on the served base", "lora_path")
    with self._lock:
      self.adapters[name] = (str(path), adapter, self.fingerprint(adapter))
      if hasattr(self.llm, "merged_cache_size"):     # every served adapter stays merged
        self.llm.merged_cache_size = max(2, len(self.adapters) + 1)
    self.count("adapters_loaded")

  def unload_adapter(self, name: str) -> None:
    with self._lock:
      if self.adapters.pop(name, None) is None:
        raise BadRequest(f"no adapter named {name!r} is loaded; loaded: {sorted(self.adapters)}",
                         "lora_name", 404)

  def resolve_model(self, model) -> tuple[str, Any] | None:
    """The adapter a request's ``model`` names (None: the base model)."""
    if model == self.model_name:
      return None
    with self._lock:
      entry = self.adapters.get(model)
    if entry is None:
      raise BadRequest(f"model {model!r} is not served here; this server serves "
                       f"{[self.model_name, *sorted(self.adapters)]}", "model", 404)
    return (model, entry[1], entry[2])

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}/v1"

  def start(self) -> "Server":
    """Serves from a daemon thread (tests, notebooks)."""
    self._thread = threading.Thread(target=self.serve_forever, name="serve-http", daemon=True)
    self._thread.start()
    return self

  def close(self) -> None:
    if self._thread is not None:
      self.shutdown()
    self.server_close()
    self.batcher.close()

  def count(self, name: str) -> int:
    with self._lock:
      self.counts[name] += 1
      return self.counts[name]

  def stats(self) -> dict[str, int]:
    with self._lock:
      out = dict(self.counts)
    b = self.batcher
    out.update(batches=b.batches, generated=b.generated, largest_batch=b.largest_batch)
    out.update(b.continuous_stats())
    return out

  def authorized(self, header: str | None) -> bool:
    if not self._api_key:
      return True
    return secrets.compare_digest(header or "", f"Bearer {self._api_key}")


class _Handler(http.server.BaseHTTPRequestHandler):
  server: Server

  def log_message(self, fmt, *args):
    # The request line and status only: headers (the API key) are never logged.
    logging.info("%s %s", self.address_string(), fmt % args)

  def _send(self, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    try:
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
      pass        # the client gave up (its timeout); nothing left to tell it

  def _error(self, status: int, message: str, kind: str, param: str | None = None) -> None:
    self.server.count("http_4xx" if status < 500 else "http_5xx")
    self._send(status, {"error": {"message": message, "type": kind, "param": param,
                                  "code": None}})

  def do_GET(self):
    s = self.server
    if self.path in ("/v1/models", "/models"):
      with s._lock:
        adapters = sorted(s.adapters.items())
      self._send(200, {"object": "list", "data": [
          {"id": s.model_name, "object": "model", "created": s.created, "owned_by": "optimas-jax",
           "root": s.model_name, "parent": None, "fingerprint": s.fingerprint()}] + [
          {"id": name, "object": "model", "created": s.created, "owned_by": "optimas-jax",
           "root": path, "parent": s.model_name, "fingerprint": fingerprint}
          for name, (path, _, fingerprint) in adapters]})
    elif self.path in ("/v1/stats", "/stats"):
      self._send(200, s.stats())
    elif self.path == "/health":
      self._send(200, {"status": "ok"})
    else:
      self._error(404, f"no route GET {self.path}; try /v1/models", "not_found_error")

  def do_POST(self):
    s = self.server
    n = s.count("http_requests")
    if not s.inflight.acquire(blocking=False):
      try:
        self._read_body()                # closing on unread bytes resets the connection
      except BadRequest:
        pass
      s.count("busy")
      self._error(429, "the server is busy (max_inflight); retry", "rate_limit_error")
      return
    try:
      self._post(n)
    finally:
      s.inflight.release()

  def _post(self, n: int):
    s = self.server
    routes = {"/v1/chat/completions": True, "/chat/completions": True,
              "/v1/completions": False, "/completions": False,
              "/v1/load_lora_adapter": "load", "/v1/unload_lora_adapter": "unload"}
    try:
      # Read the body before any answer: closing on unread bytes resets the connection.
      raw = self._read_body()
      if self.path not in routes:
        raise BadRequest(f"no route POST {self.path}; try /v1/chat/completions or "
                         "/v1/completions", None, 404, "not_found_error")
      if not s.authorized(self.headers.get("Authorization")):
        raise BadRequest("missing or wrong API key; send 'Authorization: Bearer <key>'", None,
                         401, "authentication_error")
      if s.fail_status and (s.fail_count < 0 or n <= s.fail_count):
        s.count("injected_failures")
        raise BadRequest(f"injected failure {n} (--fail_status={s.fail_status})", None,
                         s.fail_status, "server_error" if s.fail_status >= 500 else "test_error")
      if s.delay_s:
        time.sleep(s.delay_s)
      if routes[self.path] in ("load", "unload"):
        payload = self._adapter_admin(_parse_json(raw), routes[self.path])
      else:
        payload = self._complete(_parse_json(raw), chat=routes[self.path])
    except BadRequest as e:
      self._error(e.status, e.message, e.kind, e.param)
      return
    except Busy as e:
      s.count("busy")
      self._error(429, f"the server is busy: {e}; retry", "rate_limit_error")
      return
    except Exception as e:  # pylint: disable=broad-except
      logging.error("internal error on POST %s:\n%s", self.path, traceback.format_exc())
      self._error(500, f"internal error: {type(e).__name__}: {e}", "server_error")
      return
    self._send(200, payload)

  def _read_body(self) -> bytes:
    length = self.headers.get("Content-Length")
    if length is None or not length.isdigit():
      raise BadRequest("missing Content-Length header", None, 411)
    if int(length) > MAX_BODY_BYTES:
      raise BadRequest(f"body of {length} bytes exceeds {MAX_BODY_BYTES}", None, 413)
    return self.rfile.read(int(length))

  def _adapter_admin(self, body: dict, action: str) -> dict:
    name = body.get("lora_name")
    if not isinstance(name, str):
      raise BadRequest("'lora_name' must be a string", "lora_name")
    if action == "unload":
      self.server.unload_adapter(name)
      return {"object": "lora_adapter", "id": name, "unloaded": True}
    path = body.get("lora_path")
    if not isinstance(path, str) or not path:
      raise BadRequest("'lora_path' must be the adapter's folder (models.lora.save_adapter)",
                       "lora_path")
    self.server.load_adapter_request(name, path)
    return {"object": "lora_adapter", "id": name, "root": path, "loaded": True}

  def _complete(self, body: dict, chat: bool) -> dict:
    s = self.server
    model = body.get("model")
    adapter = s.resolve_model(model)
    if body.get("stream"):
      raise BadRequest("'stream': true is not supported; send stream=false", "stream")
    limit = (s.max_context - 1) if s.max_context else 1 << 20
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    try:
      max_tokens = _integer(body, field, 256 if chat else 16, 1, limit)
    except BadRequest as e:
      if s.max_context:
        e.message += f" (the model's context is {s.max_context} tokens, prompt included)"
      raise
    params = SamplingParams(temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                            top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
                            max_new_tokens=max_tokens, stop=_stop(body),
                            return_logprobs=bool(body.get("logprobs") not in (None, False)))
    n = _integer(body, "n", 1, 1, s.max_batch)
    seed = _integer(body, "seed", None, -(1 << 63), (1 << 63) - 1)
    requests = [_messages(body)] if chat else _prompts(body)
    seed = s.seed_of(seed, [model, chat, requests, n, dataclasses.asdict(params)])
    gens = s.batcher.generate([r for r in requests for _ in range(n)], params, seed,
                              adapter and adapter[:2])
    choices = [self._choice(i, g, chat, params.return_logprobs) for i, g in enumerate(gens)]
    prompt_tokens = sum(g.prompt_tokens for g in gens[::n])   # each prompt counted once
    completion_tokens = sum(g.num_tokens for g in gens)
    return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "system_fingerprint": adapter[2] if adapter else s.fingerprint(),
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}

  def _choice(self, index: int, g: Generation, chat: bool, logprobs: bool) -> dict:
    lp = None
    if logprobs and g.logprobs is not None:
      ids = g.token_ids or ()
      tokens = [self.server.token_text(t) for t in ids]
      if chat:
        lp = {"content": [{"token": t, "logprob": p, "bytes": list(t.encode()), "top_logprobs": []}
                          for t, p in zip(tokens, g.logprobs)]}
      else:
        offsets = [sum(map(len, tokens[:k])) for k in range(len(tokens))]
        lp = {"tokens": tokens, "token_logprobs": list(g.logprobs), "top_logprobs": None,
              "text_offset": offsets}
    out = {"index": index, "finish_reason": g.finish_reason, "logprobs": lp}
    if chat:
      out["message"] = {"role": "assistant", "content": g.text}
    else:
      out["text"] = g.text
    return out


def make_server(model: str = "tiny-llama", host: str = "127.0.0.1", port: int = 0, *,
                dtype: str = "float32", max_context: int | None = 4096, **options) -> Server:
  """A ``Server`` over ``load_local_llm(model)``; ``options`` go to ``Server``."""
  from optimas_jax.llm.local import load_local_llm
  llm = load_local_llm(model, dtype=dtype, max_context=max_context)
  return Server(llm, model, host, port, **options)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="OpenAI-compatible server over a local JAX model.")
  parser.add_argument("--model", default="smollm2-135m-instruct",
                      help="smollm2-135m-instruct, tiny-llama (random, for tests) or hf:<dir>")
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--max_context", type=int, default=4096)
  parser.add_argument("--scheduler", default="continuous", choices=SCHEDULERS,
                      help="continuous: base-model requests join a running decode batch and "
                           "leave it when done; window: requests arriving within "
                           "--batch_window_ms decode together until the longest is done")
  parser.add_argument("--continuous_context", type=int, default=1024,
                      help="prompt + new tokens a continuous slot holds; longer requests and "
                           "adapter requests take the window")
  parser.add_argument("--batch_window_ms", type=float, default=20.0)
  parser.add_argument("--max_batch", type=int, default=32)
  parser.add_argument("--seed", type=int, default=None,
                      help="derive the seed of each request that sends none from this, the "
                           "request and its repeat count (reproducible runs); default: fresh")
  parser.add_argument("--api_key_env", default="",
                      help="require 'Authorization: Bearer $<this env var>' (default: open)")
  parser.add_argument("--lora", action="append", default=[], metavar="NAME=PATH",
                      help="serve a LoRA adapter (models.lora.save_adapter folder) as model NAME; "
                           "repeatable; more can be loaded at run time (POST /v1/load_lora_adapter)")
  parser.add_argument("--max_queue", type=int, default=1024,
                      help="answers that may wait for the decoder; past it: 429")
  parser.add_argument("--max_inflight", type=int, default=64,
                      help="HTTP requests handled at once; past it: 429")
  parser.add_argument("--adapter_root", default="",
                      help="the folder run-time adapter loads may read from (default: none)")
  parser.add_argument("--delay_ms", type=float, default=0.0, help="test only: answer late")
  parser.add_argument("--fail_status", type=int, default=0, help="test only: answer this status")
  parser.add_argument("--fail_count", type=int, default=0,
                      help="test only: to the first N requests (-1: all)")
  args = parser.parse_args(argv)
  api_key = None
  if args.api_key_env:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
      parser.error(f"--api_key_env={args.api_key_env} but ${args.api_key_env} is empty; set it")

  logging.set_verbosity(logging.INFO)
  from optimas_jax.runtime import configure_process
  # a restarted server reuses its compiled decoders (the compilation cache)
  logging.info("host memory: %s", configure_process())
  server = make_server(args.model, args.host, args.port, dtype=args.dtype,
                       max_context=args.max_context, batch_window_ms=args.batch_window_ms,
                       max_batch=args.max_batch, delay_ms=args.delay_ms,
                       fail_status=args.fail_status, fail_count=args.fail_count, api_key=api_key,
                       seed=args.seed, max_queue=args.max_queue, max_inflight=args.max_inflight,
                       adapter_root=args.adapter_root or None, scheduler=args.scheduler,
                       continuous_context=args.continuous_context)
  for item in args.lora:
    name, eq, path = item.partition("=")
    if not eq:
      parser.error(f"--lora={item!r}: expected NAME=PATH")
    try:
      server.load_adapter(name, path)
    except BadRequest as e:
      parser.error(f"--lora={item}: {e.message}")
  # Tests read this line to learn the port (--port=0).
  print(f"serving {args.model} at {server.url}", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
    server.batcher.close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
