import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.lrf.buckets import plan_epoch
from optimas_jax.lrf.score import Scorer
from optimas_jax.lrf import train as train_lib
from optimas_jax.lrf.train import Trainer, steps_per_epoch, train_step, update_mask
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


def test_the_activation_cache_is_bounded_and_keeps_the_batch_it_fills(backbone, groups):
  from optimas_jax.lrf.cache import ActivationCache
  t, state = _trainer(backbone, groups, trainable="heads")
  texts = t.cache.store.copy()
  one = next(iter(texts.values())).nbytes
  small = ActivationCache(t.lrf, t.cfg.buckets, max_bytes=3 * one)
  keys = list(texts)[:6]
  # Refill the same texts by their ids: re-encode through the trainer's own path.
  first = {k: np.array([1, 2, 3 + i], np.int32) for i, k in enumerate(keys[:4])}
  small.fill(state.frozen, first)
  assert len(small.store) == 4 and small.evictions == 0      # one batch: kept whole
  second = {k: np.array([5, 6, 7 + i], np.int32) for i, k in enumerate(keys[4:])}
  small.fill(state.frozen, second)
  assert small.bytes <= 3 * one and set(second) <= set(small.store)
  assert small.evictions == 3 and small.misses == 6
  with pytest.raises(ValueError, match="max_bytes"):
    ActivationCache(t.lrf, t.cfg.buckets, max_bytes=0)


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


def _heads(trainable):
  return trainable["params"]["heads"]["Dense_0"]


def test_switching_update_masks_does_not_retrace(backbone, groups, monkeypatch):
  # The trainer jits the module-level train_step: count its traces there.
  monkeypatch.setattr(train_lib, "train_step",
                      chex.assert_max_traces(train_lib.train_step, n=1))
  train = groups[0]
  t, state = _trainer(backbone, groups, trainable="top")
  length, idxs = [p for p in plan_epoch(train, (32, 64), 4, 0, 0) if p[0] == 64][0]
  batch = t.batch(train, idxs, length)
  for only in (None, 0, 1, None):
    mask = None if only is None else t.update_mask(state.trainable, only)
    state, _ = t.step_fn(state, batch, jax.random.PRNGKey(0), mask)
  assert t.jitted_step.programs() == 1
  with pytest.raises(ValueError, match="only_head"):
    update_mask(state.trainable, 2, 2)


def test_head_only_steps_leave_everything_else_bit_identical(backbone, groups):
  train = groups[0]
  t, state = _trainer(backbone, groups, trainable="top")
  plan = plan_epoch(train, (32, 64), 4, 0, 0)
  batch = lambda i: t.batch(train, plan[i][1], plan[i][0])
  # A full step first: Adam moments and weight decay are live for every leaf.
  state, _ = t.step_fn(state, batch(0), jax.random.PRNGKey(0))
  before = jax.device_get(state)
  mask = t.update_mask(state.trainable, 0)
  for i in (1, 2, 3):
    state, m = t.step_fn(state, batch(i), jax.random.PRNGKey(0), mask)
    assert float(m["head_grad_norm"][1]) == 0.0
  after = jax.device_get(state)
  np.testing.assert_array_equal(_heads(after.trainable)["kernel"][1],
                                _heads(before.trainable)["kernel"][1])
  np.testing.assert_array_equal(_heads(after.trainable)["bias"][1],
                                _heads(before.trainable)["bias"][1])
  assert not np.array_equal(_heads(after.trainable)["kernel"][0],
                            _heads(before.trainable)["kernel"][0])
  chex.assert_trees_all_equal(after.trainable["params"]["backbone"],
                              before.trainable["params"]["backbone"])
  # Moments of masked leaves are untouched too (a later update starts clean).
  adam = lambda s: s.opt_state[1][0]
  chex.assert_trees_all_equal(adam(after).mu["params"]["backbone"],
                              adam(before).mu["params"]["backbone"])
  np.testing.assert_array_equal(_heads(adam(after).nu)["kernel"][1],
                                _heads(adam(before).nu)["kernel"][1])
  assert int(after.step) == 4


def test_fit_resumes_to_the_same_state_and_calls_the_hook(backbone, groups):
  train = groups[0]
  t, state = _trainer(backbone, groups, trainable="heads")
  per_epoch = steps_per_epoch(train, t.cfg)
  ends = []
  whole, summary = t.fit(state, train, 2, plan_seed=7, on_step=ends.append)
  assert summary["steps"] == 2 * per_epoch == len(ends) and summary["pairs"] > 0
  assert [e.step for e in ends if e.epoch_end] == [per_epoch, 2 * per_epoch]
  assert ends[-1].last and not any(e.last for e in ends[:-1])
  state = t.init_state(jax.random.PRNGKey(0), backbone.params)
  half, first = t.fit(state, train, 1, plan_seed=7)
  resumed, second = t.fit(half, train, 2, plan_seed=7, start_step=int(half.step))
  assert first["steps"] == second["steps"] == per_epoch
  chex.assert_trees_all_equal(jax.device_get(resumed.trainable),
                              jax.device_get(whole.trainable))


def test_fit_raises_on_a_non_finite_loss_naming_the_lr(backbone, groups):
  train = groups[0]
  t, state = _trainer(backbone, groups, trainable="heads")
  trainable = jax.tree.map(lambda x: x, state.trainable)
  trainable["params"]["heads"]["Dense_0"]["kernel"] = jnp.full_like(
      _heads(trainable)["kernel"], jnp.nan)
  with pytest.raises(FloatingPointError, match=r"config.lrf.optim.lr"):
    t.fit(state.replace(trainable=trainable), train, 1, plan_seed=0)


def test_the_memory_estimate_names_the_fields_to_change_before_compiling(backbone):
  t = Trainer(make_lrf(backbone, trainable="full"), small_cfg(trainable="full"), 2, 10)
  state = t.init_state(jax.random.PRNGKey(0), backbone.params)
  line = t.memory_estimate(state)
  assert "parameters" in line and "optimizer state" in line and "activations" in line
  assert t.jitted_step is None                                  # nothing compiled yet
  with pytest.raises(MemoryError, match=r"does not fit; raise config.lrf.fsdp.*groups_per_batch"):
    t.memory_estimate(state, limit=1 << 10)


@pytest.mark.usefixtures("fresh_compiles")
@pytest.mark.parametrize("kept_on_disk", [False, True])
def test_the_initial_state_is_one_program_with_buffers_of_its_own(
    backbone, groups, tmp_path, monkeypatch, kept_on_disk):
  from optimas_jax.core import exported  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(exported, "_folder", lambda: tmp_path if kept_on_disk else None)
  rng = jax.random.PRNGKey(3)
  for trainable in ("full", "lora"):
    t = Trainer(make_lrf(backbone, trainable=trainable), small_cfg(trainable=trainable), 2, 10)
    state = t.init_state(rng, backbone.params)
    # The op-by-op init's values (LoRA's A within a rounding: one fused scale).
    want = train_lib.init_state(t.lrf, t.tx, rng, backbone.params)
    chex.assert_trees_all_equal_structs(state, want)
    chex.assert_trees_all_close(jax.device_get(state), jax.device_get(want), rtol=1e-6,
                                atol=0)
    chex.assert_trees_all_equal(jax.device_get(state.frozen), jax.device_get(want.frozen))
    registry = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(backbone.params)}
    assert not registry & {x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)}
    if trainable == "full":      # the step donates the state: the registry's arrays stay
      length, idxs = plan_epoch(groups[0], (32, 64), 4, 0, 0)[0]
      state, _ = t.step_fn(state, t.batch(groups[0], idxs, length), rng)
      assert not any(x.is_deleted() for x in jax.tree.leaves(backbone.params))
  if kept_on_disk:                         # traced and compiled once, then loaded
    assert len(list(tmp_path.glob("lrf_init_state-*.xla"))) == 2


def test_mixed_precision_steps_keep_float32_state_and_follow_float32(backbone, groups):
  train = groups[0]
  plan = plan_epoch(train, (32, 64), 4, 0, 0)[:3]
  losses = {}
  for compute in ("", "bfloat16"):
    t, state = _trainer(backbone, groups, trainable="full", compute_dtype=compute)
    out = []
    for length, idxs in plan:
      state, m = t.step_fn(state, t.batch(train, idxs, length), jax.random.PRNGKey(0))
      out.append(float(m["loss"]))
    # Parameters, frozen weights and Adam's moments stay float32 in mixed precision.
    assert {x.dtype for x in jax.tree.leaves((state.trainable, state.frozen))
            } == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state)
            if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    losses[compute] = out
  np.testing.assert_allclose(losses["bfloat16"], losses[""], rtol=5e-2)
  assert losses["bfloat16"] != losses[""]       # the products did run in bfloat16


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")
def test_the_float32_step_compiles_with_ynnpack_reductions_and_eval_without(backbone, groups):
  """models/xla_cpu.py: training programs get the option, forward-only ones do not."""
  t, state = _trainer(backbone, groups, trainable="full")
  plan = plan_epoch(groups[0], (32, 64), 4, 0, 0)
  t.precompile(state, t.batch(groups[0], plan[0][1], plan[0][0]), jax.random.PRNGKey(0))
  option = "xla_cpu_experimental_ynn_fusion_type"
  assert t.jitted_step.compiler_options == {option: "LIBRARY_FUSION_TYPE_REDUCE"}
  assert t.lrf.compiler_options == {option: ""}
