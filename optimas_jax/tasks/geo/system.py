"""The GeoQA compound system: four components, all four variable types.

  query_writer (SmolLM2; prompt) -> retriever (BM25 / MiniLM dense / hybrid;
  hyperparameters) -> evidence_selector (Flax policy over MiniLM features;
  model parameters) -> answerer (model choice: SmolLM2 reader or fact reader)

Metric: token F1 of the answer (exact match is reported beside it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from optimas_jax import system as osys
from optimas_jax.core.ranking import greedy_ordering
from optimas_jax.tasks import llm_calls, metrics
from optimas_jax.tasks.geo import data, readers

WRITER_PROMPT = "Rewrite the question as a short search query."
READER_PROMPT = "Answer the question using the passages. Reply with the answer only."
EVIDENCE_KEEP = 2
NUM_FEATURES = 6
_STOP = set("a an the of in is which what who has as its on or and by to used country whose "
            "more larger area inhabitants capital currency continent".split())

# Instruction sentences the prompt optimizer's edits may add (a weak proposer
# still explores); none of them names an answer.
WRITER_HINTS = (
    "Keep every country and city name from the question.",
    "Reply with keywords only, no full sentence.",
    "Do not answer the question.",
    "Include the words capital, currency or continent when the question asks for them.",
    "Use at most ten words.",
)


def content_words(text: str) -> list[str]:
  return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


class SelectorPolicy(nn.Module):
  """Scores each retrieved passage from its features: (B, K, F) -> (B, K)."""

  hidden: int = 16

  @nn.compact
  def __call__(self, features):
    h = nn.tanh(nn.Dense(self.hidden, kernel_init=nn.initializers.normal(0.3))(features))
    return nn.Dense(1, kernel_init=nn.initializers.normal(0.3))(h)[..., 0]


def init_selector(seed: int) -> dict:
  params = SelectorPolicy().init(jax.random.key(seed), jnp.zeros((1, 1, NUM_FEATURES)))
  return jax.tree.map(np.asarray, params)["params"]


@jax.jit
def selector_logits(params, features):
  return SelectorPolicy().apply({"params": params}, features)


@dataclasses.dataclass
class Resources:
  """Corpus indexes and models shared by the components (loaded once)."""

  passages: list[str]
  titles: list[str]
  embeddings: np.ndarray           # (N, H) MiniLM, normalized
  bm25: object
  encoder: object                  # models.registry.Backbone (MiniLM)
  llm: object | None               # LLM interface, None when only tools are used
  passage_index: dict = dataclasses.field(default_factory=dict)
  _query_cache: dict = dataclasses.field(default_factory=dict)

  def embed(self, texts: list[str]) -> np.ndarray:
    from optimas_jax.models import bert
    missing = [t for t in dict.fromkeys(texts) if t not in self._query_cache]
    if missing:
      # Pad the batch to a multiple of 32 rows: one compiled shape per length bucket.
      padded = missing + [""] * (-len(missing) % 32)
      vecs = bert.encode_sentences(self.encoder.module, self.encoder.params,
                                   self.encoder.tokenizer, padded, batch_size=32)
      self._query_cache.update(zip(missing, vecs[: len(missing)]))
    return np.stack([self._query_cache[t] for t in texts]) if texts else np.zeros((0, 384))


def _corpus_embeddings(encoder, passages: list[str], cache_dir: pathlib.Path | None) -> np.ndarray:
  from optimas_jax.models import bert
  digest = hashlib.blake2b("\n".join(passages).encode(), digest_size=8).hexdigest()
  path = cache_dir / f"geoqa-corpus-{digest}.npy" if cache_dir else None
  if path is not None and path.exists():
    return np.load(path)
  emb = bert.encode_sentences(encoder.module, encoder.params, encoder.tokenizer, passages,
                              batch_size=64)
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
  return emb


def load_resources(llm=None, cache_dir: str | None = None) -> Resources:
  from rank_bm25 import BM25Okapi
  from optimas_jax.models import registry
  corpus = data.corpus()
  passages = [p["text"] for p in corpus]
  encoder = registry.load_backbone("minilm")
  emb = _corpus_embeddings(encoder, passages, pathlib.Path(cache_dir) if cache_dir else None)
  bm25 = BM25Okapi([content_words(p) or ["_"] for p in passages])
  return Resources(passages, [p["title"] for p in corpus], emb, bm25, encoder, llm,
                   passage_index={p: i for i, p in enumerate(passages)})


# ------------------------------------------------------------------ LLM calls


def _chat(res: Resources, system_prompt: str, users: list[str], max_new_tokens: int,
          temperature: float, rng: osys.BatchRng) -> list[str]:
  return llm_calls.chat(res.llm, system_prompt, users, max_new_tokens, temperature, rng)


def selector_features(res: Resources, inputs) -> tuple[np.ndarray, np.ndarray]:
  """(B, K, F) features of each retrieved passage and the (B, K) mask of real ones."""
  k = max(len(x["passages"]) for x in inputs)
  feats = np.zeros((len(inputs), k, NUM_FEATURES), np.float32)
  mask = np.zeros((len(inputs), k), bool)
  q_emb = res.embed([x["question"] for x in inputs])
  for i, x in enumerate(inputs):
    ps = x["passages"]
    p_emb = res.embeddings[[res.passage_index[p] for p in ps]]
    qw = set(content_words(x["question"]))
    for j, p in enumerate(ps):
      pw = set(content_words(p))
      head = p.split(" is a ")[0].lower()
      feats[i, j] = [q_emb[i] @ p_emb[j], len(qw & pw) / max(len(qw), 1),
                     float(head in x["question"].lower()), j / max(len(ps), 1),
                     float(" is a country in " in p), 1.0]
      mask[i, j] = True
  return feats, mask



# ------------------------------------------------------------------ components


def make_components(res: Resources, writer_temperature: float = 0.7) -> list[osys.Component]:

  def write_query(inputs, prompt, rng):
    if res.llm is None:   # tools-only mode: the query is the question
      return [{"query": x["question"]} for x in inputs]
    outs = _chat(res, prompt, [x["question"] for x in inputs], 16, writer_temperature, rng)
    return [{"query": o.split("\n")[0][:200]} for o in outs]

  def retrieve(inputs, hp, rng):
    texts = [x["question"] if hp["query_mode"] == "question" else
             x["query"] if hp["query_mode"] == "query" else f"{x['question']} {x['query']}"
             for x in inputs]
    dense = res.embed(texts) @ res.embeddings.T if hp["method"] != "bm25" else None
    out = []
    for i, t in enumerate(texts):
      if hp["method"] == "dense":
        score = dense[i]
      else:
        bm = res.bm25.get_scores(content_words(t) or ["_"])
        score = bm if hp["method"] == "bm25" else (
            bm / (bm.max() + 1e-9) + dense[i] / (np.abs(dense[i]).max() + 1e-9))
      top = np.argsort(-score, kind="stable")[: hp["k"]]
      out.append({"passages": [res.passages[j] for j in top]})
    return out


  def select(inputs, params, rng):
    # The deployed pick is the policy's greedy ordering through the same
    # render the optimizer rewards (optimize/policy.py).
    feats, mask = selector_features(res, inputs)
    logits = np.asarray(selector_logits(params, feats))
    order = greedy_ordering(logits, mask, min(EVIDENCE_KEEP, mask.shape[1]))
    return [render_selection(x, order[i], feats[i]) for i, x in enumerate(inputs)]

  def propose_selection(inputs, params, num, rng):
    """Alternative evidence sets sampled from the policy (Plackett-Luce without replacement)."""
    feats, mask = selector_features(res, inputs)
    logits = np.where(mask, np.asarray(selector_logits(params, feats)), -np.inf)
    out = []
    for i, x in enumerate(inputs):
      g = rng.numpy(i)
      alts = []
      for _ in range(num):
        noisy = logits[i] + g.gumbel(size=logits.shape[1])
        order = np.argsort(-noisy)[: min(EVIDENCE_KEEP, len(x["passages"]))]
        alts.append({"evidence": [x["passages"][j] for j in order]})
      out.append(alts)
    return out

  def answer(inputs, model, rng):
    if model == "fact_reader":
      return [{"answer": readers.fact_reader(x["question"], x["evidence"])} for x in inputs]
    users = ["Passages:\n" + "\n".join(f"- {p}" for p in x["evidence"])
             + f"\n\nQuestion: {x['question']}" for x in inputs]
    outs = _chat(res, READER_PROMPT, users, 12, 0.0, rng)
    return [{"answer": o.split("\n")[0].strip().rstrip(".")} for o in outs]

  return [
      osys.Component("query_writer", "Rewrite a geography question as a search query.",
                     ["question"], ["query"], write_query, osys.Prompt(WRITER_PROMPT)),
      osys.Component("retriever", "Retrieve passages for the question from the corpus.",
                     ["question", "query"], ["passages"], retrieve,
                     osys.Hyperparameters({"method": osys.Choice(("bm25", "dense", "hybrid")),
                                           "k": osys.Choice((1, 2, 3, 5, 8)),
                                           "query_mode": osys.Choice(("query", "question", "both"))},
                                          {"method": "bm25", "k": 5, "query_mode": "query"}),
                     deterministic=True),
      osys.Component("evidence_selector",
                     "Pick the passages that contain the facts needed to answer the question.",
                     ["question", "passages"], ["evidence"], select,
                     osys.ModelParameters(init_selector, seed=0), propose=propose_selection,
                     deterministic=True),
      osys.Component("answerer", "Answer the question from the evidence passages.",
                     ["question", "evidence"], ["answer"], answer,
                     # The fact reader is the default: a SmolLM2 read of two passages
                     # costs ~10x a query rewrite on CPU (see README, GeoQA).
                     osys.ModelChoice(("fact_reader", "smollm2"), "fact_reader"),
                     deterministic=True),   # the SmolLM2 reader decodes greedily
  ]


def render_selection(x: dict, ordering, features_row=None) -> dict:
  """The selector's output when it picks passages in `ordering` (best first)."""
  del features_row
  n = min(EVIDENCE_KEEP, len(x["passages"]))
  return {"evidence": [x["passages"][int(j)] for j in list(ordering)[:n]]}


def build_system(res: Resources, writer_temperature: float = 0.7) -> osys.System:
  metric = osys.Metric(lambda ex, pred: metrics.token_f1(pred["answer"], ex["answer"]),
                       ["answer"], name="f1", failure_value=0.0)
  return osys.System(make_components(res, writer_temperature), ["question"], metric)


def exact_match(examples, result) -> float:
  return float(np.mean([0.0 if p is None else metrics.exact_match(p["answer"], ex["answer"])
                        for ex, p in zip(examples, result.predictions)]))
