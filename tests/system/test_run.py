"""Running systems: run / run_from / evaluate, order, failures, counters."""

import random
import threading
import time

import numpy as np
import pytest

from optimas_jax import system as osys
from tests.system.helpers import make_diamond

EXAMPLES = [{"a": w} for w in ("alpha", "beta", "gamma", "delta", "eps")]


def test_run_returns_traces_in_input_order():
  s = make_diamond()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=3)
  assert [t.index for t in res.traces] == list(range(5))
  for ex, t, pred in zip(EXAMPLES, res.traces, res.predictions):
    assert t.steps["left"].inputs == {"a": ex["a"]}
    assert pred["r"] == ex["a"][::-1]
    assert t.steps["left"].variable == "P"
  assert s.counters.snapshot()["system_runs"] == 5


def test_run_from_equals_run_when_nothing_changes():
  s = make_diamond()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=7)
  for comp in s.order:
    again = s.run_from(comp, res.traces, cfg)
    assert again.predictions == res.predictions
    np.testing.assert_array_equal(s.evaluate(EXAMPLES, again), s.evaluate(EXAMPLES, res))


def test_run_from_holds_upstream_and_parallel_branches_fixed():
  s = make_diamond()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=7)
  new = s.run_from("left", res.traces, cfg.override(left="Q", right={"times": 2}))
  for old, fresh in zip(res.traces, new.traces):
    assert fresh.steps["right"] is old.steps["right"]      # parallel branch kept as recorded
    assert fresh.steps["left"].outputs["l"].startswith("Q:")
    assert fresh.steps["join"].inputs["r"] == old.steps["right"].outputs["r"]
  calls = s.counters.snapshot()["components"]
  assert calls["right"]["calls"] == 5 and calls["left"]["calls"] == 10


def test_samples_differ_but_are_reproducible_and_batch_independent():
  s = make_diamond()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=1)
  a = s.run_from("join", res.traces, cfg, sample=0).predictions
  b = s.run_from("join", res.traces, cfg, sample=1).predictions
  assert a != b
  assert s.run_from("join", res.traces, cfg, sample=0).predictions == a
  alone = s.run_from("join", res.traces[2:3], cfg, sample=0).predictions
  assert alone == a[2:3]


def test_concurrent_component_keeps_input_order_under_random_delays():
  delays = random.Random(0)
  lock = threading.Lock()
  in_flight = [0, 0]  # current, max

  def slow_echo(x, variable, rng):
    with lock:
      in_flight[0] += 1
      in_flight[1] = max(in_flight[1], in_flight[0])
    time.sleep(delays.uniform(0, 0.02))
    with lock:
      in_flight[0] -= 1
    return {"y": x["x"] * 10}

  comp = osys.Component("remote", "", ("x",), ("y",), osys.per_example(slow_echo, max_workers=4))
  s = osys.System([comp], ["x"], osys.Metric(lambda e, p: float(p["y"] == e["x"] * 10), ("y",)))
  examples = [{"x": i} for i in range(40)]
  res = s.run(examples, s.default_config())
  assert [p["y"] for p in res.predictions] == [i * 10 for i in range(40)]
  assert 1 < in_flight[1] <= 4


class Flaky(Exception):
  pass


def test_failures_are_scored_counted_and_isolated():
  def picky(inputs, variable, rng):
    if any(x["a"] == "gamma" for x in inputs):
      raise ValueError("cannot read gamma")
    return [{"b": x["a"]} for x in inputs]

  def tail(inputs, variable, rng):
    return [ValueError("no delta") if x["b"] == "delta" else {"c": x["b"] + "!"} for x in inputs]

  comps = [osys.Component("picky", "", ("a",), ("b",), picky),
           osys.Component("tail", "", ("b",), ("c",), tail)]
  s = osys.System(comps, ["a"], osys.Metric(lambda e, p: 1.0, ("c",), failure_value=-1.0))
  res = s.run(EXAMPLES, s.default_config())
  assert res.num_failed == 2
  assert res.failures() == [(2, "picky: ValueError: cannot read gamma"),
                            (3, "tail: ValueError: no delta")]
  scores = s.evaluate(EXAMPLES, res)
  np.testing.assert_array_equal(scores, [1, 1, -1, -1, 1])   # never dropped
  counts = s.counters.snapshot()["components"]
  assert counts["picky"]["failures"] == 1 and counts["tail"]["failures"] == 1
  assert counts["tail"]["calls"] == 4                         # gamma never reached tail
  # Re-running the tail keeps the upstream failure as a failure.
  again = s.run_from("tail", res.traces, s.default_config())
  assert again.failures() == res.failures()


def test_only_transient_errors_are_retried_with_a_cap():
  attempts = {"flaky": 0, "fatal": 0}

  def flaky(inputs, variable, rng):
    attempts["flaky"] += 1
    if attempts["flaky"] < 3:
      raise Flaky("try again")
    return [{"b": 1} for _ in inputs]

  def fatal(inputs, variable, rng):
    attempts["fatal"] += 1
    raise RuntimeError("broken")

  policy = osys.RetryPolicy(transient=(Flaky,), max_retries=5, backoff_s=0.001)
  s = osys.System([osys.Component("f", "", ("a",), ("b",), flaky, retry=policy)], ["a"],
                  osys.Metric(lambda e, p: 1.0, ("b",)))
  assert s.run([{"a": 1}], s.default_config()).num_failed == 0
  assert attempts["flaky"] == 3 and s.counters.snapshot()["components"]["f"]["retries"] == 2

  s2 = osys.System([osys.Component("g", "", ("a",), ("b",), fatal, retry=policy)], ["a"],
                   osys.Metric(lambda e, p: 1.0, ("b",)))
  assert s2.run([{"a": 1}], s2.default_config()).num_failed == 1
  assert attempts["fatal"] == 1                               # not transient: no retry

  capped = osys.RetryPolicy(transient=(Flaky,), max_retries=1, backoff_s=0.001)
  attempts["flaky"] = -10
  s3 = osys.System([osys.Component("h", "", ("a",), ("b",), flaky, retry=capped)], ["a"],
                   osys.Metric(lambda e, p: 1.0, ("b",)))
  res = s3.run([{"a": 1}], s3.default_config())
  assert res.num_failed == 1 and "Flaky: try again" in res.failures()[0][1]


def test_missing_output_field_and_wrong_length():
  comp = osys.Component("c", "", ("a",), ("b",), lambda xs, v, r: [{"z": 1} for _ in xs])
  s = osys.System([comp], ["a"], osys.Metric(lambda e, p: 1.0, ("b",)))
  res = s.run([{"a": 1}], s.default_config())
  assert "missing fields ['b']" in res.failures()[0][1]
  short = osys.Component("c", "", ("a",), ("b",), lambda xs, v, r: [])
  s2 = osys.System([short], ["a"], osys.Metric(lambda e, p: 1.0, ("b",)))
  with pytest.raises(osys.ComponentContractError, match="returned 0 outputs for 2 inputs"):
    s2.run([{"a": 1}, {"a": 2}], s2.default_config())


def test_missing_example_field():
  s = make_diamond()
  with pytest.raises(KeyError, match=r"example 1 lacks system input fields \['a'\]"):
    s.run([{"a": "x"}, {"b": 1}], s.default_config())


def test_counters_snapshot_round_trip():
  s = make_diamond()
  s.run(EXAMPLES, s.default_config())
  snap = s.counters.snapshot()
  c = osys.Counters()
  c.restore(snap)
  assert c.snapshot() == snap


def test_run_after_scores_a_substituted_candidate():
  s = make_diamond()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=2)
  swapped = [t.with_outputs("left", {"l": "CAND"}) for t in res.traces]
  after = s.run_after("left", swapped, cfg, sample=0)
  for old, t in zip(res.traces, after.traces):
    assert t.steps["left"].outputs == {"l": "CAND"}            # candidate held fixed
    assert t.steps["join"].outputs["out"].startswith("CAND|")  # downstream re-run
    assert t.steps["right"] is old.steps["right"]
  assert res.traces[0].steps["left"].outputs["l"] != "CAND"   # original trace untouched


def test_per_trace_sample_indices_match_single_sample_runs():
  s = make_diamond()
  cfg = s.default_config()
  res = s.run(EXAMPLES, cfg, seed=4)
  both = s.run_from("join", res.traces * 2, cfg, sample=[0] * 5 + [1] * 5).predictions
  assert both[:5] == s.run_from("join", res.traces, cfg, sample=0).predictions
  assert both[5:] == s.run_from("join", res.traces, cfg, sample=1).predictions


def test_run_takes_one_seed_per_example_when_given():
  s = make_diamond()
  cfg = s.default_config()
  seeds = [11, 22, 33, 44, 55]
  res = s.run(EXAMPLES, cfg, example_seeds=seeds)
  assert [t.seed for t in res.traces] == seeds
  assert [t.seed for t in s.run(EXAMPLES, cfg, seed=0).traces] == [
      osys.derive_seed(0, "example", i) for i in range(5)]
  with pytest.raises(ValueError, match="2 example_seeds for 5 examples"):
    s.run(EXAMPLES, cfg, example_seeds=[1, 2])
