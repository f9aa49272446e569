"""The run budget: defined once (system/counters.py), stopping exactly at its cap."""

import pytest

from optimas_jax import system as osys
from tests.system.helpers import make_diamond

EXAMPLES = [{"a": w} for w in ("alpha", "beta", "gamma", "delta", "eps")]


def test_a_cap_stops_a_run_exactly_at_the_budget():
  system = make_diamond()
  system.counters.set_budget_cap(7)
  cfg = system.default_config()
  system.run(EXAMPLES, cfg)                                  # 5 of 7
  with pytest.raises(osys.BudgetSpent, match="2 of 5 runs"):
    system.run(EXAMPLES, cfg)                                # 2 fit: done and counted
  assert system.counters.budget_used == 7
  with pytest.raises(osys.BudgetSpent):
    system.run(EXAMPLES[:1], cfg)
  assert system.counters.budget_used == 7


def test_reruns_count_failed_examples_and_stop_at_the_cap():
  def flaky(inputs, variable, rng):
    return [ValueError("bad") if x["a"] == "beta" else {"b": x["a"]} for x in inputs]
  system = osys.System([osys.Component("f", "d", ["a"], ["b"], flaky, osys.Prompt("p"))], ["a"],
                       osys.Metric(lambda ex, p: 1.0, ["b"]))
  cfg = system.default_config()
  res = system.run(EXAMPLES, cfg)
  assert res.num_failed == 1 and system.counters.budget_used == 5
  system.rerun(["f"], res.traces, cfg)                      # the failing example is paid too
  assert system.counters.snapshot()["partial_runs"] == 5
  system.counters.set_budget_cap(12)
  with pytest.raises(osys.BudgetSpent):
    system.rerun(["f"], res.traces, cfg)
  assert system.counters.budget_used == 12


def test_unmetered_runs_are_counted_apart_and_ignore_the_cap():
  system = make_diamond()
  system.counters.set_budget_cap(5)
  cfg = system.default_config()
  system.run(EXAMPLES, cfg)
  with system.counters.unmetered():                         # e.g. the test set
    system.run(EXAMPLES, cfg)
  snap = system.counters.snapshot()
  assert (snap["system_runs"], snap["unmetered_runs"]) == (5, 5)
  other = osys.Counters()
  other.restore(snap)
  assert other.snapshot() == snap


def test_proposals_are_paid_before_they_run():
  system = make_diamond()
  system.pay_partial(3)
  assert system.counters.snapshot()["partial_runs"] == 3
  system.counters.set_budget_cap(4)
  with pytest.raises(osys.BudgetSpent):
    system.pay_partial(2)
  assert system.counters.budget_used == 3
