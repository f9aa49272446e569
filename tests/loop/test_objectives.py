"""The local objectives and the method registry: failures count, variants are two choices."""

import numpy as np
import pytest

from optimas_jax import methods
from optimas_jax import system as osys
from optimas_jax.loop.objectives import LrfObjective, MetricObjective
from optimas_jax.loop.optimas import OptimasVariant


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


def test_variants_are_two_choices_and_the_registry_names_every_method():
  get = methods.get
  assert (get("optimas").scoring, get("optimas").lrf_update) == ("lrf", "online")
  static = get("optimas_static")
  assert static.trains_lrf and not static.adapts_lrf          # never pays for fresh pairs
  assert get("coordinate").scoring == "metric" and not get("coordinate").trains_lrf
  assert not get("unoptimized").iterates
  assert {"mipro_instructions", "mipro", "gepa", "textgrad"} <= set(methods.METHODS)
  assert all(m.iterates for n, m in methods.METHODS.items() if n != "unoptimized")
  with pytest.raises(ValueError, match=r"config.method='sgd' is not known; choose one of"):
    get("sgd")
  with pytest.raises(ValueError, match="LRF scoring needs a trained LRF"):
    OptimasVariant("odd", "metric", "online")
