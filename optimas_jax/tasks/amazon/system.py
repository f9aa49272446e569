"""Amazon next-item selection: the paper's three-stage shape, run locally.

  session_analyzer (hyperparameters: how the session is pooled)
    -> candidate_profiler (Flax policy over MiniLM similarity features:
       model parameters; ranks the 4 candidates)
    -> next_item_decider (hyperparameters: the decision rule)

Metric: accuracy (the decided title is the answer). The paper uses local
LMs trained by PPO for the first two stages and an API LLM prompt for the
decider; the `:api` variant of experiments/amazon.py swaps in an LLM decider.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from optimas_jax import system as osys
from optimas_jax.core.ranking import greedy_ordering
from optimas_jax.tasks import llm_calls

NUM_FEATURES = 11
_WORD = re.compile(r"[a-z0-9]+")

DECIDER_PROMPT = ("You recommend the next product a shopper will click. Reply with the number "
                  "(1-4) of the most likely candidate.")
DECIDER_HINTS = (
    "Shoppers usually continue with the same kind of product they viewed last.",
    "Prefer the candidate that shares brand or product type with the recent items.",
    "Trust the profiler's first candidate unless another clearly matches better.",
)


def words(text: str) -> set[str]:
  return set(_WORD.findall(text.lower()))


def pooling_weights(n: int, hp: dict) -> np.ndarray:
  """Weights over the last `focus` session items (oldest first), summing to 1."""
  m = min(n, hp["focus"])
  if hp["pooling"] == "last":
    w = np.zeros(m)
    w[-1] = 1.0
  elif hp["pooling"] == "mean":
    w = np.ones(m)
  else:   # exponential decay from the most recent item
    w = hp["decay"] ** np.arange(m)[::-1]
  return w / w.sum()


class ProfilerPolicy(nn.Module):
  """Scores each candidate from its features: (B, K, F) -> (B, K).

  A linear term plus a small tanh MLP. At init the linear term is
  `prior_scale` times feature 0 (cosine to the analyzer's pooled session) and
  the MLP's output layer is zero, so the untrained policy is the zero-training
  cosine ranker (the usual baseline on this task), and its Gumbel proposals
  explore around it; training moves it from there.
  """

  hidden: int = 8
  prior_scale: float = 10.0

  @nn.compact
  def __call__(self, features):
    def prior_init(key, shape, dtype=jnp.float32):
      return jnp.zeros(shape, dtype).at[0, 0].set(self.prior_scale)
    linear = nn.Dense(1, kernel_init=prior_init)(features)[..., 0]
    h = nn.tanh(nn.Dense(self.hidden, kernel_init=nn.initializers.normal(0.3))(features))
    return linear + nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[..., 0]


def init_profiler(seed: int) -> dict:
  params = ProfilerPolicy().init(jax.random.key(seed), jnp.zeros((1, 1, NUM_FEATURES)))
  return jax.tree.map(np.asarray, params)["params"]


@jax.jit
def profiler_logits(params, features):
  return ProfilerPolicy().apply({"params": params}, features)


def _pooled(s: np.ndarray, w: np.ndarray) -> np.ndarray:
  p = w @ s
  return p / (np.linalg.norm(p) + 1e-9)


def candidate_features(embedder, inputs) -> tuple[np.ndarray, np.ndarray]:
  """(B, 4, F) similarity features of each candidate to the session focus, and the mask.

  Cosine to the analyzer's pooled session, to fixed recency poolings (decay
  0.3 / 0.6 / 0.9 / mean), the best and second-best single item, the last and
  second-to-last item, and word overlap with the last item: the policy learns
  how to weigh recency against the whole session.
  """
  k = max(len(x["choices"]) for x in inputs)
  feats = np.zeros((len(inputs), k, NUM_FEATURES), np.float32)
  mask = np.zeros((len(inputs), k), bool)
  for i, x in enumerate(inputs):
    focus = x["session_focus"]
    s = embedder.embed(focus)                       # (m, H), oldest first
    c = embedder.embed(x["choices"])                # (k, H)
    m = len(focus)
    pooled = [_pooled(s, np.asarray(x["focus_weights"], np.float32))]
    pooled += [_pooled(s, d ** np.arange(m)[::-1]) for d in (0.3, 0.6, 0.9, 1.0)]
    sims = np.sort(c @ s.T, axis=1)                 # (k, m) ascending
    last_words = words(focus[-1])
    for j, title in enumerate(x["choices"]):
      tw = words(title)
      feats[i, j] = [*(c[j] @ p for p in pooled), sims[j, -1], sims[j, max(m - 2, 0)],
                     c[j] @ s[-1], c[j] @ s[max(m - 2, 0)],
                     len(tw & last_words) / max(len(tw), 1), 1.0]
      mask[i, j] = True
  return feats, mask


def ranking_output(x: dict, order, similarity) -> dict:
  """Titles best first, each with its similarity to the pooled session (same order)."""
  order = [int(j) for j in order]
  return {"ranking": [x["choices"][j] for j in order],
          "similarity": [round(float(similarity[j]), 3) for j in order]}


def render_ranking(x: dict, ordering, features_row: np.ndarray) -> dict:
  """The profiler's output when it ranks the candidates in `ordering` (best first).

  `features_row` (K, F) are the row's candidate features; feature 0 (cosine
  to the pooled session) is the similarity the decider reads.
  """
  n = len(x["choices"])
  return ranking_output(x, list(ordering)[:n], np.asarray(features_row)[:n, 0])


def make_components(embedder, llm=None) -> list[osys.Component]:

  def analyze(inputs, hp, rng):
    out = []
    for x in inputs:
      w = pooling_weights(len(x["sequence"]), hp)
      out.append({"session_focus": list(x["sequence"][-len(w):]),
                  "focus_weights": [round(float(v), 3) for v in w]})
    return out

  def profile(inputs, params, rng):
    # The deployed ranking is the policy's greedy ordering through the same
    # render the optimizer rewards (optimize/policy.py).
    feats, mask = candidate_features(embedder, inputs)
    order = greedy_ordering(np.asarray(profiler_logits(params, feats)), mask, mask.shape[1])
    return [render_ranking(x, order[i], feats[i]) for i, x in enumerate(inputs)]

  def propose_rankings(inputs, params, num, rng):
    """Alternative rankings sampled from the policy (Gumbel top-k = Plackett-Luce)."""
    feats, mask = candidate_features(embedder, inputs)
    logits = np.where(mask, np.asarray(profiler_logits(params, feats)), -np.inf)
    out = []
    for i, x in enumerate(inputs):
      g, n = rng.numpy(i), len(x["choices"])
      out.append([ranking_output(x, np.argsort(-(logits[i, :n] + g.gumbel(size=n))),
                                 feats[i, :n, 0]) for _ in range(num)])
    return out

  def decide(inputs, hp, rng):
    out = []
    for x in inputs:
      # Positions in the profiler's ranking (best first) and their similarities.
      by_sim = list(np.argsort(-np.asarray(x["similarity"]), kind="stable"))
      if hp["rule"] == "ranking":
        pick = 0
      elif hp["rule"] == "similarity":
        pick = int(by_sim[0])
      else:   # borda: sum of the two ranks, the profiler breaking ties
        pick = min(range(len(by_sim)), key=lambda j: (j + by_sim.index(j), j))
      out.append({"choice": x["ranking"][pick]})
    return out

  def decide_llm(inputs, prompt, rng):
    users = ["Recently viewed:\n" + "\n".join(f"- {t}" for t in x["session_focus"])
             + "\n\nCandidates (most likely first by the profiler):\n"
             + "\n".join(f"{x['choices'].index(t) + 1}. {t}" for t in x["ranking"])
             + "\n\nAnswer with the candidate number only." for x in inputs]
    out = []
    for x, text in zip(inputs, llm_calls.chat(llm, prompt, users, 8, 0.0)):
      m = re.search(r"\b([1-4])\b", text)
      # An answer without a candidate number falls back to the profiler's first pick.
      pick = x["choices"].index(x["ranking"][0]) if m is None else int(m.group(1)) - 1
      out.append({"choice": x["choices"][pick]})
    return out

  analyzer = osys.Component(
      "session_analyzer", "Summarize which recently viewed products the next click depends on.",
      ["sequence"], ["session_focus", "focus_weights"], analyze,
      osys.Hyperparameters({"pooling": osys.Choice(("last", "decay", "mean")),
                            "decay": osys.Choice((0.3, 0.6, 0.9)),
                            "focus": osys.Choice((1, 2, 3, 5))},
                           {"pooling": "last", "decay": 0.6, "focus": 3}),
      deterministic=True)
  profiler = osys.Component(
      "candidate_profiler", "Rank the candidate products by how likely the shopper clicks next.",
      ["session_focus", "focus_weights", "choices"], ["ranking", "similarity"], profile,
      osys.ModelParameters(init_profiler, seed=0), propose=propose_rankings, deterministic=True)
  if llm is None:
    decider = osys.Component(
        "next_item_decider", "Pick the product the shopper will click next.",
        ["ranking", "similarity"], ["choice"], decide,
        osys.Hyperparameters({"rule": osys.Choice(("ranking", "similarity", "borda"))},
                             {"rule": "ranking"}),
        deterministic=True)
  else:
    decider = osys.Component(
        "next_item_decider", "Pick the product the shopper will click next.",
        ["session_focus", "choices", "ranking"], ["choice"], decide_llm,
        osys.Prompt(DECIDER_PROMPT), deterministic=True)
  return [analyzer, profiler, decider]


def build_system(embedder, llm=None) -> osys.System:
  metric = osys.Metric(lambda ex, pred: float(pred["choice"] == ex["choices"][ex["answer"]]),
                       ["choice"], name="accuracy", failure_value=0.0)
  return osys.System(make_components(embedder, llm), ["sequence", "choices"], metric)
