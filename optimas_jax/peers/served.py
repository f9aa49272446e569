"""The local model behind `python -m optimas_jax.serve`, as each peer library wants it.

Every peer (DSPy's LM through LiteLLM, GEPA's reflection LM, TextGrad's
engine) calls the same served model on loopback: the same weights the
system's components decode with. `start` serves an already loaded LLM (the
task's own, so one copy of the weights) from this process on a free
loopback port; `ServedModel(url, model)` connects to one started with

  python -m optimas_jax.serve --model=smollm2-135m-instruct --port=8000
"""

from __future__ import annotations

import dataclasses
import os
import threading
import urllib.parse

from absl import logging

from optimas_jax.peers import env

API_KEY = "local"          # the loopback server is open; clients insist on some key


@dataclasses.dataclass
class ServedModel:
  """An OpenAI-compatible endpoint on loopback and the clients the peers use on it.

  `max_tokens` and `temperature` are the defaults of the peers' own LM
  calls (proposals, reflections, textual gradients); a library that sets
  its own per call keeps it.
  """

  base_url: str
  model: str
  max_tokens: int = 128
  temperature: float = 0.7
  timeout_s: float = 300.0
  server: object = None            # the in-process serve.Server, when `start` made it

  def __post_init__(self):
    host = urllib.parse.urlparse(self.base_url).hostname
    if not env.is_loopback_host(host or ""):
      raise ValueError(f"peer runs call the served model on loopback; {self.base_url!r} is "
                       "not (start `python -m optimas_jax.serve` on 127.0.0.1)")

  @classmethod
  def start(cls, llm, model: str, batch_window_ms: float = 20.0, max_batch: int = 32,
            seed: int | None = None, **kw) -> "ServedModel":
    """Serves `llm` (a loaded ``LLM``) from this process on 127.0.0.1, a free port.

    ``seed``: requests that send no seed (the peers' clients send none) get
    one derived from it and the request, so a repeated run gets the same
    answers (serve.Server.seed_of).
    """
    from optimas_jax.llm import serve

    class QuietHandler(serve._Handler):  # pylint: disable=protected-access
      def log_message(self, fmt, *args):    # thousands of optimizer calls: not one INFO line each
        logging.debug("%s %s", self.address_string(), fmt % args)

    # The window scheduler: the peers' recorded runs (docs/results) were served by it.
    server = serve.Server(llm, model, "127.0.0.1", 0, batch_window_ms=batch_window_ms,
                          max_batch=max_batch, seed=seed, scheduler="window")
    server.RequestHandlerClass = QuietHandler
    return cls(server.start().url, model, server=server, **kw)

  def close(self) -> None:
    if self.server is not None:
      self.server.close()
      self.server = None

  def stats(self) -> dict:
    return {} if self.server is None else self.server.stats()

  # -------------------------------------------------------------- clients

  def dspy_lm(self, cache_dir=None, **kw):
    """A ``dspy.LM`` (LiteLLM, OpenAI chat protocol) on this endpoint."""
    dspy = env.require("dspy", cache_dir, "a DSPy peer run")
    settings = dict(temperature=self.temperature, max_tokens=self.max_tokens, num_retries=3,
                    timeout=self.timeout_s)
    settings.update(kw)
    return dspy.LM(f"openai/{self.model}", api_base=self.base_url, api_key=API_KEY,
                   model_type="chat", **settings)

  def gepa_lm(self, **kw):
    """GEPA's own LiteLLM wrapper (``gepa.lm.LM``): its reflection LM."""
    env.require("gepa", what="a GEPA peer run")
    from gepa.lm import LM
    settings = dict(temperature=self.temperature, max_tokens=self.max_tokens)
    settings.update(kw)
    return LM(f"openai/{self.model}", api_base=self.base_url, api_key=API_KEY,
              timeout=self.timeout_s, **settings)

  def textgrad_engine(self, cache_dir, **kw):
    """TextGrad's engine for OpenAI-compatible servers (``ChatExternalClient``) on this endpoint.

    Its disk cache goes to `cache_dir` (not ~/.cache), and every call is
    capped at `max_tokens` (TextGrad's default of 2000 is far past what a
    135M model writes usefully).
    """
    env.require("textgrad", cache_dir, "a TextGrad peer run")
    import diskcache
    import openai
    from textgrad.engine.local_model_openai_api import ChatExternalClient

    max_tokens = kw.pop("max_tokens", self.max_tokens)
    temperature = kw.pop("temperature", 0.0)

    class ServedEngine(ChatExternalClient):
      def generate(self, content, system_prompt=None, **call_kw):
        call_kw.setdefault("max_tokens", max_tokens)
        call_kw.setdefault("temperature", temperature)
        return super().generate(content, system_prompt=system_prompt, **call_kw)

    client = openai.OpenAI(base_url=self.base_url, api_key=API_KEY, timeout=self.timeout_s,
                           max_retries=3)
    with _env_key():
      engine = ServedEngine(client=client, model_string=self.model, **kw)
    engine.cache.close()
    engine.cache_path = os.path.join(str(cache_dir), f"textgrad_{self.model}.db")
    engine.cache = diskcache.Cache(engine.cache_path)
    return engine


_env_lock = threading.Lock()


class _env_key:
  """TextGrad's engine insists on $OPENAI_API_KEY at construction (and sets it from the
  client); set it for the construction only and restore what was there."""

  def __enter__(self):
    _env_lock.acquire()
    self.before = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = API_KEY

  def __exit__(self, *exc):
    if self.before is None:
      os.environ.pop("OPENAI_API_KEY", None)
    else:
      os.environ["OPENAI_API_KEY"] = self.before
    _env_lock.release()
