"""The loop's LRF (lrf.rewards): text rendering, scoring paths, training,
heads-only online updates, over-long outputs."""

import pathlib
import sys

import chex
import jax
import numpy as np
import pytest

from optimas_jax.collect.preferences import PreferenceGroup
from optimas_jax.lrf.rewards import LocalRewards, render_value


def _cfg(trainable="top"):
  sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "experiments"))
  import common  # experiments/ holds config files, loaded by path
  cfg = common.optimas_config().lrf
  cfg.backbone = "tiny-bert"
  cfg.trainable = trainable
  cfg.max_len = 64
  cfg.buckets = (32, 64)
  cfg.groups_per_batch = 4
  cfg.optim.lr = 1e-2
  return cfg


def _groups(n=24, seed=0, component="pick"):
  """The candidate naming the input's colour is best."""
  rng = np.random.default_rng(seed)
  colours = ["red", "green", "blue", "yellow", "purple", "orange"]
  out = []
  for _ in range(n):
    c = colours[int(rng.integers(len(colours)))]
    others = [x for x in colours if x != c]
    cands = [c] + [others[int(i)] for i in rng.choice(len(others), 2, replace=False)]
    order = rng.permutation(3)
    out.append(PreferenceGroup(component, {"colour": c}, tuple({"answer": cands[i]} for i in order),
                               tuple(1.0 if cands[i] == c else 0.0 for i in order)))
  return out


def test_render_value_keeps_every_list_item():
  v = ["Peru is a country. Its capital is Lima.", "Cusco is a city. It is big."]
  assert render_value(v, "first_sentence") == "  1. Peru is a country.\n  2. Cusco is a city."
  assert "Its capital is Lima." in render_value(v)


def test_cached_activation_scores_equal_full_forward_scores():
  r = LocalRewards(_cfg(), [("pick", "Pick the colour of the input."), ("other", "x")], seed=0)
  triples = [("pick", g.inputs, c) for g in _groups(4) for c in g.candidates]
  fast = r.score_many(triples)
  assert r.trainer.cache.misses > 0                    # went through the activation cache
  r.scorer.activations = None                          # full forward, fresh memo
  r.scorer.cache.clear()
  full = r.scorer.score([(r.index[c], r._fields(i), r._fields(o)) for c, i, o in triples])
  np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-5)


def test_training_raises_pairwise_accuracy_on_held_out_groups():
  r = LocalRewards(_cfg(), [("pick", "Pick the colour of the input.")], seed=0)
  train, held = _groups(48, 0), _groups(24, 1)
  before = r.pairwise_accuracy(held)["pick"]
  stats = r.train(train, epochs=8, tag="t")
  after = r.pairwise_accuracy(held)["pick"]
  assert stats["steps"] == 8 * 12 and np.isfinite(stats["loss"])
  assert after > max(before, 0.75), (before, after)
  # Scores follow the trained params: the version (step) keys the score memo.
  assert int(r.state.step) == stats["steps"]


def test_checkpoint_arrays_leave_out_the_frozen_backbone_and_restore_exactly():
  cfg = _cfg()
  r = LocalRewards(cfg, [("pick", "Pick the colour of the input.")], seed=0)
  r.train(_groups(16), epochs=2, tag="t")
  saved = jax.tree.map(np.asarray, r.checkpoint_arrays())
  assert "frozen" not in saved and jax.tree.leaves(r.state.frozen)
  held = [("pick", g.inputs, c) for g in _groups(4, 1) for c in g.candidates]
  want = r.score_many(held)

  fresh = LocalRewards(cfg, [("pick", "Pick the colour of the input.")], seed=0)
  assert not np.allclose(fresh.score_many(held), want)          # untrained differs
  fresh.restore_arrays(saved, r.frozen_digest())
  np.testing.assert_allclose(fresh.score_many(held), want, rtol=1e-5, atol=1e-6)
  assert int(fresh.state.step) == int(r.state.step)
  with pytest.raises(ValueError, match="config.lrf.backbone"):
    fresh.restore_arrays(saved, "0" * 32)


TWO = [("pick", "Pick the colour of the input."), ("other", "Name the colour you were given.")]


def _triples(groups):
  return [(g.component, g.inputs, c) for g in groups for c in g.candidates]


def test_head_only_online_update_leaves_other_components_untouched():
  r = LocalRewards(_cfg("top"), TWO, seed=0)
  r.train(_groups(24, 0) + _groups(24, 1, "other"), epochs=3, tag="init")
  held_other = _groups(16, 2, "other")
  other_before = r.score_many(_triples(held_other))
  accuracy_before = r.pairwise_accuracy(held_other)["other"]
  saved = jax.tree.map(np.asarray, r.checkpoint_arrays())   # own copies: steps donate
  heads = lambda s: s["trainable"]["params"]["heads"]["Dense_0"]["kernel"]

  online = _groups(24, 3) + _groups(8, 4, "other")
  stats = r.train(online, epochs=2, tag="iter1", only_head="pick")
  assert stats["steps"] > 0 and np.isfinite(stats["loss"])
  # Only 'pick' groups were used: 24 groups x 2 pairs each.
  assert stats["pairs"] == 2 * 2 * 24
  after = jax.tree.map(np.asarray, r.checkpoint_arrays())
  assert not np.array_equal(heads(after)[0], heads(saved)[0])      # A's head moved
  np.testing.assert_array_equal(heads(after)[1], heads(saved)[1])
  chex.assert_trees_all_equal(after["trainable"]["params"]["backbone"],
                              saved["trainable"]["params"]["backbone"])
  np.testing.assert_array_equal(r.score_many(_triples(held_other)), other_before)
  assert r.pairwise_accuracy(held_other)["other"] >= accuracy_before - 0.02

  # The problem it solves: the same update training the shared top layer
  # moves the other component's rewards.
  r.restore_arrays(saved, r.frozen_digest())
  np.testing.assert_array_equal(r.score_many(_triples(held_other)), other_before)
  r.train(online, epochs=2, tag="iter1")
  assert not np.array_equal(r.score_many(_triples(held_other)), other_before)
  with pytest.raises(ValueError, match="only_head"):
    r.train(online, epochs=1, tag="x", only_head="nope")


def test_over_long_output_is_kept_trained_on_and_scored():
  r = LocalRewards(_cfg("heads"), [("pick", "Pick the colour of the input.")], seed=0)
  filler = "and then some more words follow here " * 20
  long_group = PreferenceGroup(
      "pick", {"colour": "red"},
      ({"answer": "red " + filler}, {"answer": "blue " + filler}), (1.0, 0.0))
  stats = r.train([long_group] + _groups(8), epochs=1, tag="t")
  # 8 colour groups x 2 pairs, plus the long group's pair: nothing dropped.
  assert stats["pairs"] == 8 * 2 + 1
  assert r.encoder.stats["truncated_outputs"] == 2
  assert r.encoder.stats["output_tokens_removed"] > 0
  scores = r.score("pick", [long_group.inputs] * 2, list(long_group.candidates))
  assert np.isfinite(scores).all() and scores[0] != scores[1]
