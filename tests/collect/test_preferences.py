"""Preference collection: candidates, Monte-Carlo scores, pairs, cache, replay."""

import numpy as np
import pytest

from optimas_jax import system as osys
from optimas_jax.collect.cache import RolloutCache
from optimas_jax.collect.preferences import CollectStats, PreferenceCollector, PreferenceGroup
from optimas_jax.collect.replay import ReplayBuffer


def make_system():
  """guess (choice of an offset) -> noisy (adds +-1 noise) ; metric: closeness to target."""

  def guess(inputs, variable, rng):
    return [{"g": x["base"] + variable["offset"]} for x in inputs]

  def noisy(inputs, variable, rng):
    return [{"y": x["g"] + int(rng.numpy(i).integers(-1, 2))} for i, x in enumerate(inputs)]

  comps = [
      osys.Component("guess", "guess a number", ["base"], ["g"], guess,
                     osys.Hyperparameters({"offset": osys.Choice((0, 1, 2, 3))}, {"offset": 0})),
      osys.Component("noisy", "add noise", ["g"], ["y"], noisy),
  ]
  metric = osys.Metric(lambda ex, p: -abs(p["y"] - ex["target"]), ["y"])
  return osys.System(comps, ["base"], metric)


EXAMPLES = [{"base": b, "target": b + 2} for b in range(6)]


def test_groups_rank_candidates_by_monte_carlo_score():
  s = make_system()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=0)
  col = PreferenceCollector(s, num_candidates=4, num_rollouts=8)
  groups, stats = col.collect("guess", res.traces, cfg, round_id="r0")
  assert stats.groups == len(groups) == 6 and stats.candidates == 24
  by_offset = np.zeros(4)
  for g in groups:
    offsets = [c["g"] - g.inputs["base"] for c in g.candidates]
    assert offsets[0] == 0                                      # recorded output first
    assert sorted(offsets) == [0, 1, 2, 3]                      # the whole space, deduped
    by_offset[offsets] += g.scores
  # Expected scores: offset 2 -> -2/3, offsets 1 and 3 -> -1, offset 0 -> -2.
  assert int(np.argmax(by_offset)) == 2 and int(np.argmin(by_offset)) == 0
  for g in groups:
    # every ordered pair with distinct scores, both directions never
    assert g.num_pairs == sum(a > b for a in g.scores for b in g.scores)
  assert stats.rollouts_run == 6 * 4 * 8


def test_cache_avoids_paying_twice_and_counts_hits(tmp_path):
  s = make_system()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=0)
  cache = RolloutCache(tmp_path / "rollouts.sqlite")
  col = PreferenceCollector(s, num_candidates=4, num_rollouts=3, cache=cache)
  g1, st1 = col.collect("guess", res.traces, cfg, "r0")
  partial_before = s.counters.snapshot()["partial_runs"]
  g2, st2 = col.collect("guess", res.traces, cfg, "r0")
  assert st2.rollouts_run == 0 and st2.rollouts_cached == st1.rollouts_run == 72
  # only the 3 candidate re-runs x 6 examples were paid again, not the 72 rollouts
  assert s.counters.snapshot()["partial_runs"] - partial_before == 18
  assert [g.scores for g in g1] == [g.scores for g in g2]
  assert s.counters.snapshot()["components"]["guess"]["cache_hits"] == 72
  # A fresh cache object on the same file still hits (survives restarts).
  col2 = PreferenceCollector(s, 4, 3, cache=RolloutCache(tmp_path / "rollouts.sqlite"))
  assert col2.collect("guess", res.traces, cfg, "r0")[1].rollouts_run == 0


def test_changed_downstream_variable_misses_the_cache():
  s = make_system()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=0)
  cache = RolloutCache()
  PreferenceCollector(s, 2, 2, cache=cache).collect("noisy", res.traces, cfg, "r0")
  st = PreferenceCollector(s, 2, 2, cache=cache).collect(
      "guess", res.traces, cfg.override(guess={"offset": 1}), "r0")[1]
  assert st.rollouts_cached == 0


def test_sample_mode_draws_fresh_candidates_per_round():
  s = make_system()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=0)
  col = PreferenceCollector(s, num_candidates=3, num_rollouts=1, mode="sample")
  a, _ = col.collect("noisy", res.traces, cfg, "r0")
  b, _ = col.collect("noisy", res.traces, cfg, "r1")
  assert [g.candidates for g in a] != [g.candidates for g in b]
  assert [g.candidates for g in a] == [g.candidates for g in col.collect(
      "noisy", res.traces, cfg, "r0")[0]]


def test_failed_rollouts_score_as_failures_not_dropped():
  def boom(inputs, variable, rng):
    return [ValueError("odd") if x["g"] % 2 else {"y": x["g"]} for x in inputs]
  s = make_system()
  s.components["noisy"] = osys.Component("noisy", "", ["g"], ["y"], boom)
  cfg = s.default_config()
  res = s.run([{"base": 0, "target": 0}], cfg)
  groups, st = PreferenceCollector(s, 4, 1).collect("guess", res.traces, cfg, "r0")
  assert st.failed_rollouts == 2
  g = groups[0]
  scores = dict(zip([c["g"] for c in g.candidates], g.scores))
  assert scores[1] == scores[3] == 0.0 == s.metric.failure_value
  assert scores[0] == 0.0 and scores[2] == -2.0


def test_replay_buffer_is_bounded_and_round_trips():
  buf = ReplayBuffer(capacity_pairs=5)
  groups = [PreferenceGroup("c", {"i": k}, ({"o": 1}, {"o": 2}, {"o": 3}), (0.0, 1.0, 2.0))
            for k in range(4)]                               # 3 pairs each
  buf.add(groups)
  kept = buf.groups("c")
  assert [g.inputs["i"] for g in kept] == [3]                # newest kept within 5 pairs
  back = ReplayBuffer.from_state_dict(buf.state_dict())
  assert back.groups("c") == kept
  assert len(buf.sample("c", 10, np.random.default_rng(0))) == 1
  with pytest.raises(ValueError, match="capacity_pairs"):
    ReplayBuffer(0)


def _collect_with_proposer(propose):
  """A deterministic "guess" component whose candidates come from `propose`, collected."""
  def pick(inputs, variable, rng):
    return [{"g": x["base"]} for x in inputs]

  s = make_system()
  s.components["guess"] = osys.Component(
      "guess", "", ["base"], ["g"], pick,
      osys.ModelParameters(lambda seed: {"w": np.zeros(1)}), propose=propose)
  cfg = s.default_config()
  res = s.run(EXAMPLES[:2], cfg)
  groups, st = PreferenceCollector(s, 4, 2, mode="sample").collect("guess", res.traces, cfg, "r")
  return s, groups, st


def test_propose_hook_supplies_candidates_for_deterministic_components():
  def propose(inputs, variable, num, rng):
    return [[{"g": x["base"] + d} for d in (1, 2, 3, 4)[:num]] for x in inputs]

  _, groups, _ = _collect_with_proposer(propose)
  assert [[c["g"] - g.inputs["base"] for c in g.candidates] for g in groups] == [[0, 1, 2, 3]] * 2


def test_a_proposer_that_raises_is_counted_and_collection_goes_on():
  from optimas_jax.llm import ledger
  billed = []

  def propose(inputs, variable, num, rng):
    billed.append(ledger.current_component())
    raise RuntimeError("the proposer's reply did not parse")

  s, groups, st = _collect_with_proposer(propose)
  assert groups == [] and st.failed_proposals == 1 and st.failed_candidates == 2 * 3
  assert "did not parse" in st.last_proposal_error
  assert billed == ["guess"]                      # its LLM tokens are billed to the component
  assert s.counters.per_component["guess"]["failures"] == 2


def test_deterministic_downstream_needs_one_rollout():
  s = make_system()
  s.components["noisy"] = osys.Component("noisy", "", ["g"], ["y"],
                                         lambda xs, v, r: [{"y": x["g"]} for x in xs],
                                         deterministic=True)
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg)
  _, st = PreferenceCollector(s, 4, 5).collect("guess", res.traces, cfg, "r")
  assert st.rollouts_run == 6 * 4                              # not 6 * 4 * 5


def test_space_candidates_depend_on_the_run_seed():
  system = make_system()
  cfg = system.default_config()
  traces = system.run(EXAMPLES, cfg, seed=0).traces
  drawn = []
  for seed in range(4):
    collector = PreferenceCollector(system, num_candidates=2, num_rollouts=1, mode="space",
                                    seed=seed)
    cands = collector.candidates("guess", traces, cfg, "iter0", CollectStats())
    drawn.append(cands[0][1]["g"])
  assert len(set(drawn)) > 1          # today's bug: every seed drew the same candidates


def test_replay_sample_respects_its_pair_budget():
  buf = ReplayBuffer(100)
  groups = [PreferenceGroup("c", {"x": i}, ({"y": 0}, {"y": 1}, {"y": 2}), (0.0, 0.5, 1.0))
            for i in range(5)]                                # 3 pairs each
  buf.add(groups)
  rng = np.random.default_rng(0)
  assert buf.sample("c", 0, rng) == []
  assert buf.sample("c", 2, rng) == []
  assert sum(g.num_pairs for g in buf.sample("c", 7, rng)) == 6


def test_rollout_cache_forgets_an_interrupted_round(tmp_path):
  cache = RolloutCache(tmp_path / "r.sqlite")
  cache.put_many("rollout", {"a": 1.0}, round_index=0)
  cache.put_many("rollout", {"b": 2.0}, round_index=3)
  assert cache.forget_rounds_from(3) == 1
  assert cache.get_many("rollout", ["a", "b"]) == {"a": 1.0}
  state = cache.state_dict()
  other = RolloutCache(tmp_path / "r.sqlite")
  other.load_state_dict(state)
  assert other.state_dict() == state == {"hits": 1, "misses": 1}
