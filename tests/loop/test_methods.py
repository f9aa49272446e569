"""The loop's methods and local objectives: failures count, budgets are shared."""

import numpy as np

from optimas_jax import system as osys
from optimas_jax.loop.methods import METHODS, LrfObjective, MetricObjective


class LengthReward:
  """A stand-in LRF: longer outputs score higher."""

  def score_many(self, triples):
    return np.array([float(len(o["b"])) for _, _, o in triples])


def _system():
  def shout(inputs, prompt, rng):
    return [ValueError("cannot") if prompt == "fail-on-x" and x["a"] == "x"
            else {"b": prompt + x["a"]} for x in inputs]
  comp = osys.Component("shout", "d", ["a"], ["b"], shout, osys.Prompt("p"))
  return osys.System([comp], ["a"], osys.Metric(lambda ex, p: float(len(p["b"]) > 5), ["b"]))


EXAMPLES = [{"a": "x"}, {"a": "yy"}, {"a": "zzz"}]


def test_a_failed_output_counts_as_the_worst_reward_not_dropped():
  system = _system()
  cfg = system.default_config()
  traces = system.run(EXAMPLES, cfg).traces
  objective = LrfObjective(LengthReward(), system, "shout", traces, cfg)
  ok, failing = objective.score_values(["long-prompt", "fail-on-x"])
  # "fail-on-x" writes outputs of length 11 and 12; its failure on "x" scores
  # the lowest reward seen in the call (11). Dropped, it would average 11.5.
  assert objective.failed_outputs == 1
  assert ok == np.mean([12, 13, 14]) and failing == np.mean([11, 11, 12])
  assert failing < ok


def test_metric_objective_scores_failures_with_the_failure_value():
  system = _system()
  cfg = system.default_config()
  traces = system.run(EXAMPLES, cfg).traces
  objective = MetricObjective(system, "shout", traces, cfg)
  scores = objective.score_values(["long-prompt", "fail-on-x"])
  assert objective.failed_outputs == 1
  assert scores == [1.0, 2 / 3]


def test_the_method_table_says_what_each_method_does():
  assert METHODS["optimas"].adapts_lrf and METHODS["optimas"].objective == "lrf"
  static = METHODS["optimas_static"]
  assert static.trains_lrf and not static.adapts_lrf          # never pays for fresh pairs
  assert METHODS["coordinate"].objective == "metric" and not METHODS["coordinate"].trains_lrf
  assert not METHODS["unoptimized"].iterates
