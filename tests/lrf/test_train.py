import chex
import jax
import numpy as np
import pytest

from optimas_jax.lrf import checkpoint
from optimas_jax.lrf.buckets import plan_epoch
from optimas_jax.lrf.score import Scorer
from optimas_jax.lrf.train import Trainer, train_step
from tests.lrf.conftest import make_lrf, small_cfg


def _trainer(backbone, groups, **kw):
  cfg = small_cfg(**kw)
  lrf = make_lrf(backbone, **kw)
  t = Trainer(lrf, cfg, 2, total_steps=20)
  state = t.init_state(jax.random.PRNGKey(0), backbone.params)
  t.prepare(groups[0] + groups[1], state.frozen)
  return t, state


def test_no_retrace_within_a_bucket(backbone, groups):
  train = groups[0]
  t, state = _trainer(backbone, groups, trainable="top", cache_frozen=False,
                      accum_steps=2)
  def step(state, batch, rng):
    return train_step(state, batch, rng, lrf=t.lrf, tx=t.tx, loss_cfg=t.loss_cfg,
                      num_components=2)
  jitted = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=(0,))
  plan = [p for p in plan_epoch(train, (32, 64), 8, 0, 0) if p[0] == 64]
  assert len(plan) >= 2
  losses = []
  for length, idxs in plan[:3]:
    state, m = jitted(state, t.batch(train, idxs, length), jax.random.PRNGKey(0))
    losses.append(float(m["loss"]))
  assert int(state.step) == len(losses) and all(np.isfinite(losses))


@pytest.mark.parametrize("trainable", ["heads", "top"])
def test_activation_cache_matches_full_forward(backbone, groups, trainable):
  train = groups[0]
  cached, s1 = _trainer(backbone, groups, trainable=trainable)
  plain, s2 = _trainer(backbone, groups, trainable=trainable, cache_frozen=False)
  assert cached.cache is not None and plain.cache is None
  assert cached.cache.pooled == (trainable == "heads")
  length, idxs = plan_epoch(train, (32, 64), 4, 0, 0)[0]
  b1, b2 = cached.batch(train, idxs, length), plain.batch(train, idxs, length)
  assert "tokens" not in b1 and "tokens" in b2
  s1, m1 = cached.step_fn(s1, b1, jax.random.PRNGKey(0))
  s2, m2 = plain.step_fn(s2, b2, jax.random.PRNGKey(0))
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(s1.trainable, s2.trainable, rtol=1e-4, atol=1e-6)
  # A second fill is all hits (reuse across epochs / online updates).
  misses = cached.cache.misses
  cached.prepare(train, s1.frozen)
  assert cached.cache.misses == misses


def test_checkpoint_restore_gives_bit_identical_next_step(backbone, groups, tmp_path):
  train = groups[0]
  t, state = _trainer(backbone, groups, trainable="top")
  plan = plan_epoch(train, (32, 64), 4, 0, 0)
  batch = lambda i: t.batch(train, plan[i][1], plan[i][0])
  rng = jax.random.PRNGKey(3)
  state, _ = t.step_fn(state, batch(0), rng)
  mngr = checkpoint.manager(tmp_path)
  checkpoint.save(mngr, state, {"epoch": 0})
  mngr.wait_until_finished()
  like = t.init_state(jax.random.PRNGKey(9), backbone.params)
  restored, meta = checkpoint.restore_latest(checkpoint.manager(tmp_path), like)
  assert meta == {"epoch": 0} and int(restored.step) == 1
  a, ma = t.step_fn(state, batch(1), rng)
  b, mb = t.step_fn(restored, batch(1), rng)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(ma), jax.device_get(mb))


def test_scorer_batches_and_caches(backbone, groups):
  enc = groups[2]
  lrf = make_lrf(backbone, trainable="heads")
  t, f = lrf.init(jax.random.PRNGKey(0), backbone.params)
  scorer = Scorer(lrf, enc, (32, 64), batch_rows=8)
  scorer.update(t, f, version=0)
  triples = [(i % 2, (("session", f"red car {i}"),), (("item", "hat"),))
             for i in range(12)]
  s1 = scorer.score(triples)
  assert scorer.misses == 12 and scorer.hits == 0
  s2 = scorer.score(triples[::-1] + triples[:1])
  assert scorer.hits == 13
  np.testing.assert_array_equal(s2[:12], s1[::-1])
  # Same text, direct call: the batched/padded score equals a 1-row score.
  ids = enc.encode(*triples[3])
  direct = lrf.score(lrf.merge(t, f), ids[None], np.array([1]))
  np.testing.assert_allclose(s1[3], direct[0], rtol=1e-5, atol=1e-6)
  scorer.update(t, f, version=1)      # new LRF version: cache misses again
  scorer.score(triples[:2])
  assert scorer.misses == 14


def test_training_fits_synthetic_task(backbone, groups):
  train = groups[0]
  t, state = _trainer(backbone, groups, trainable="full")
  plan0 = plan_epoch(train, (32, 64), 4, 0, 0, shuffle=False)
  before = t.evaluate(state, train, plan0)
  for epoch in range(4):
    for length, idxs in plan_epoch(train, (32, 64), 4, 0, epoch):
      state, _ = t.step_fn(state, t.batch(train, idxs, length), jax.random.PRNGKey(0))
  after = t.evaluate(state, train, plan0)
  assert set(after) >= {"accuracy", "kendall_tau", "loss", "score_gap", "pairs"}
  assert np.mean(after["loss"]) < np.mean(before["loss"])
