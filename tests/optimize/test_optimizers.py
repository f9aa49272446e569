"""Local optimizers: search, prompt edits/OPRO, policy gradient, selection."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax import system as osys
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


def test_policy_gradient_moves_toward_rewarded_option_with_host_rewards():
  b, k, f = 6, 4, 3
  feats = jax.random.normal(jax.random.key(0), (b, k, f))
  mask = jnp.ones((b, k), bool).at[:, 3].set(False)       # option 3 does not exist
  best = np.array([0, 1, 2, 0, 1, 2])
  apply_fn = lambda p, x: (x @ p["w"])[..., 0] + p["bias"]
  params = {"w": jnp.zeros((f, 1)), "bias": jnp.zeros((k,))}
  host_calls = []

  def reward(actions):
    host_calls.append(actions.shape)
    assert (actions != 3).all()                            # masked options never sampled
    return (actions == best[:, None]).astype(np.float32)

  update = policy.make_update(apply_fn, reward, policy.PolicyConfig(steps=60, group_size=8,
                                                                     learning_rate=0.1, kl_coef=0.0))
  new, metrics = update(params, feats, mask, jax.random.key(1))
  chex.assert_shape(metrics["reward"], (60,))
  assert host_calls[0] == (b, 8)
  probs = jax.nn.softmax(jnp.where(mask, apply_fn(new, feats), -1e9))
  assert float(metrics["reward"][-10:].mean()) > float(metrics["reward"][:10].mean())
  assert float(jnp.mean(probs[jnp.arange(b), best])) > 0.5
  # A strong KL penalty keeps the policy near its start.
  tight = policy.make_update(apply_fn, reward, policy.PolicyConfig(60, 8, 0.1, kl_coef=50.0))
  p_tight, _ = tight(params, feats, mask, jax.random.key(1))
  moved = lambda p: float(jnp.abs(p["bias"]).sum() + jnp.abs(p["w"]).sum())
  assert moved(p_tight) < moved(new)


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
