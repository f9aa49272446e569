"""Local optimizers: search, prompt edits/OPRO, policy gradient, selection."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax import system as osys
from optimas_jax.core.ranking import greedy_ordering
from optimas_jax.optimize import policy, prompt, search, select


def test_exhaustive_search_finds_best_and_keeps_incumbent_on_ties():
  spec = osys.Hyperparameters({"k": osys.Choice((1, 3, 5)), "m": osys.Choice(("a", "b"))},
                              {"k": 1, "m": "a"})
  calls = []

  def evaluate(values):
    calls.append(len(values))
    return [v["k"] * (2 if v["m"] == "b" else 1) for v in values]

  res = search.search(spec, {"k": 1, "m": "a"}, evaluate, budget=10, rng=np.random.default_rng(0))
  assert res.best == {"k": 5, "m": "b"} and len(res.table) == 6 and calls == [6]
  flat = search.search(spec, {"k": 3, "m": "a"}, lambda vs: [0.0] * len(vs), 10,
                       np.random.default_rng(0))
  assert flat.best == {"k": 3, "m": "a"}


def test_large_space_search_respects_budget_and_climbs():
  spec = osys.Hyperparameters({"x": osys.IntRange(0, 100), "t": osys.FloatRange(1e-3, 1, log=True)},
                              {"x": 0, "t": 0.5})
  n = []
  res = search.search(spec, {"x": 0, "t": 0.5},
                      lambda vs: (n.append(len(vs)), [-(v["x"] - 70) ** 2 for v in vs])[1],
                      budget=40, rng=np.random.default_rng(1))
  assert sum(n) <= 40 and res.best_score >= -100


def test_model_choice_search():
  spec = osys.ModelChoice(("small", "large", "extractive"), "small")
  res = search.search(spec, "small", lambda vs: [len(v) for v in vs], 5, np.random.default_rng(0))
  assert res.best == "extractive"


def test_prompt_optimizer_edits_explore_and_incumbent_stays_in_pool():
  hints = ["Answer with a single entity.", "Use only the passages."]

  def evaluate(prompts):
    return [sum(h in p for h in hints) for p in prompts]

  cur = "Answer the question."
  hist = []
  for step in range(6):
    res = prompt.optimize_prompt(cur, hist, evaluate, description="answer", hints=hints,
                                 num_llm=0, num_edits=4, complete=None,
                                 rng=np.random.default_rng(step))
    assert res.table[0][0] == cur                        # incumbent evaluated first
    assert res.best_score >= evaluate([cur])[0]
    hist += res.table
    cur = res.best
  assert evaluate([cur])[0] == 2


def test_opro_meta_prompt_lists_history_ascending_and_cleans_output():
  seen = {}

  def complete(prompts, seed):
    seen["prompt"] = prompts[0]
    return ['Instruction: "Name the capital only."', "", "ok"]

  props = prompt.opro_proposals(complete, "answers questions", [("B", 0.9), ("A", 0.1)], 3, 0)
  assert props == ["Name the capital only."]
  assert seen["prompt"].index("Instruction: A") < seen["prompt"].index("Instruction: B")


@jax.jit
def _linear_policy(params, features):
  return (features @ params["w"])[..., 0] + params["bias"]


def test_plackett_luce_probabilities_sum_to_one_over_orderings():
  logits = jnp.array([[1.0, 0.3, -0.5, 2.0]])
  mask = jnp.array([[True, True, True, False]])              # option 3 does not exist
  orderings = [o for o in itertools.permutations(range(3), 2)]
  logp = policy.plackett_luce_log_prob(logits, mask, jnp.array([orderings]))
  np.testing.assert_allclose(float(jnp.exp(logp).sum()), 1.0, rtol=1e-5)
  # By hand: P(1, 0) = softmax(1, .3, -.5)[1] * softmax(1, -.5)[0].
  e = np.exp([1.0, 0.3, -0.5])
  want = e[1] / e.sum() * e[0] / (e[0] + e[2])
  np.testing.assert_allclose(float(jnp.exp(logp[0, orderings.index((1, 0))])), want, rtol=1e-5)


def test_policy_gradient_moves_toward_rewarded_ranking_with_host_rewards():
  b, k, f = 6, 4, 3
  feats = jax.random.normal(jax.random.key(0), (b, k, f))
  mask = jnp.ones((b, k), bool).at[:, 3].set(False)       # option 3 does not exist
  best = np.array([0, 1, 2, 0, 1, 2])
  params = {"w": jnp.zeros((f, 1)), "bias": jnp.zeros((k,))}
  host_calls = []

  def reward(orderings):                                   # host-side numpy only
    host_calls.append(orderings.shape)
    assert isinstance(orderings, np.ndarray)
    assert (orderings[..., :1] != 3).all()                  # masked options never picked first
    return (orderings[..., 0] == best[:, None]).astype(np.float32)

  cfg = policy.PolicyConfig(steps=60, group_size=8, learning_rate=0.1, kl_coef=0.0)
  new, metrics = policy.optimize(params, feats, mask, 2, reward, jax.random.key(1), cfg,
                                 _linear_policy)
  chex.assert_shape(metrics["reward"], (60,))
  assert host_calls[0] == (b, 8, 2)
  assert float(metrics["reward"][-10:].mean()) > float(metrics["reward"][:10].mean())
  probs = jax.nn.softmax(jnp.where(mask, _linear_policy(new, feats), -1e9))
  assert float(jnp.mean(probs[jnp.arange(b), best])) > 0.5     # 1/3 at the start
  # The deployed (greedy) ranking mostly puts the rewarded option first.
  deployed = greedy_ordering(np.asarray(_linear_policy(new, feats)), np.asarray(mask), 2)
  assert (deployed[:, 0] == best).mean() > 0.5
  # A strong KL penalty keeps the policy near its start.
  tight, _ = policy.optimize(params, feats, mask, 2, reward, jax.random.key(1),
                             policy.PolicyConfig(60, 8, 0.1, kl_coef=50.0), _linear_policy)
  moved = lambda p: float(jnp.abs(p["bias"]).sum() + jnp.abs(p["w"]).sum())
  assert moved(tight) < moved(new)


def test_policy_steps_compile_once_per_shape():
  feats = jax.random.normal(jax.random.key(0), (5, 4, 3))
  mask = jnp.ones((5, 4), bool)
  params = {"w": jnp.zeros((3, 1)), "bias": jnp.zeros((4,))}
  reward = lambda o: (o[..., 0] == 1).astype(np.float32)
  cfg = policy.PolicyConfig(steps=4, group_size=4, learning_rate=0.1)
  policy.optimize(params, feats, mask, 2, reward, jax.random.key(0), cfg, _linear_policy)
  sizes = (policy.update_step._cache_size(), policy.sample_orderings._cache_size())
  for seed in range(3):    # new calls with the same shapes: no new compilation
    policy.optimize(params, feats, mask, 2, reward, jax.random.key(seed), cfg, _linear_policy)
  assert (policy.update_step._cache_size(), policy.sample_orderings._cache_size()) == sizes


@pytest.mark.parametrize("bad, error", [
    (lambda o: np.zeros((1, 1)), "shape"),
    (lambda o: np.full(o.shape[:2], np.nan), "non-finite"),
    (lambda o: 1 / 0, "ZeroDivisionError"),
])
def test_policy_reward_errors_surface_clearly(bad, error):
  feats = jnp.zeros((2, 3, 3))
  params = {"w": jnp.zeros((3, 1)), "bias": jnp.zeros((3,))}
  with pytest.raises((ValueError, RuntimeError), match=error):
    policy.optimize(params, feats, jnp.ones((2, 3), bool), 1, bad, jax.random.key(0),
                    policy.PolicyConfig(steps=2, group_size=2), _linear_policy)


def test_selector_strategies_and_cooldown():
  sel = select.ComponentSelector(["a", "b", "c"], "gap_softmax", cooldown=1, temperature=0.1)
  p = sel.probabilities(0, {"a": 0.0, "b": 1.0, "c": 0.0})
  assert p.argmax() == 1 and p[1] > 0.99
  sel.accepted("b", 0)
  assert sel.probabilities(1, {"b": 1.0})[1] == 0.0        # cooling down
  assert sel.probabilities(2, {"b": 1.0})[1] > 0.99
  rr = select.ComponentSelector(["a", "b"], "round_robin", cooldown=0)
  rng = np.random.default_rng(0)
  assert [rr.select(i, {}, rng) for i in range(4)] == ["a", "b", "a", "b"]
  with pytest.raises(ValueError, match="selection strategy"):
    select.ComponentSelector(["a"], "best")


@pytest.mark.parametrize("raw, want", [
    ("- Reduces the selection.\n- More lines", "Reduces the selection."),
    ("Title: Rewrite as a query", "Rewrite as a query"),
    ("  \n\nInstruction: 'Use keywords only.'", "Use keywords only."),
    ("short", None),
    ("Use {question} here", None),
])
def test_clean_proposal(raw, want):
  assert prompt.clean_proposal(raw) == want


def test_clean_proposal_rejects_echoes_of_the_meta_prompt():
  assert prompt.clean_proposal("Score: 1.203") is None
  assert prompt.clean_proposal("A: The top 100 best-selling books") is None
