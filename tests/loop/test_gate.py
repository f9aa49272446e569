"""The validation gate: paired tests on per-example scores, a pure function."""

import numpy as np
import pytest

from optimas_jax.loop import gate


def test_one_lucky_item_out_of_16_is_rejected_but_plain_mean_accepts_it():
  incumbent = np.zeros(16)
  candidate = incumbent.copy()
  candidate[3] = 1.0                                  # +1 item, +6.25 points
  for test in ("paired_bootstrap", "sign"):
    d = gate.decide(incumbent, candidate, test=test, confidence=0.9)
    assert not d.accepted and d.wins == 1 and d.losses == 0 and d.ties == 15
  assert gate.decide(incumbent, candidate, test="mean").accepted


def test_a_consistent_improvement_is_accepted_with_its_interval():
  rng = np.random.default_rng(0)
  incumbent = rng.uniform(0, 0.5, 20)
  candidate = incumbent + rng.uniform(0.05, 0.2, 20)      # better on every example
  d = gate.decide(incumbent, candidate, test="paired_bootstrap", confidence=0.9, seed=1)
  assert d.accepted and 0 < d.lower <= d.mean_difference <= d.upper
  assert d.p_value == 0.0
  s = gate.decide(incumbent, candidate, test="sign", confidence=0.9)
  assert s.accepted and s.p_value == pytest.approx(0.5 ** 20)


def test_wins_and_losses_that_cancel_are_rejected_and_min_gain_applies():
  incumbent = np.zeros(10)
  candidate = np.array([1, -1] * 5, float)
  assert not gate.decide(incumbent, candidate).accepted
  better = np.full(10, 0.01)
  assert gate.decide(incumbent, better, test="sign").accepted
  assert not gate.decide(incumbent, better, test="sign", min_gain=0.05).accepted


def test_sign_test_p_value_by_hand():
  # 4 wins, 0 losses: p = 1/16 = 0.0625 <= 0.1 -> accepted; 3 wins: 0.125 -> rejected.
  d4 = gate.decide(np.zeros(6), np.array([1, 1, 1, 1, 0, 0.]), test="sign", confidence=0.9)
  d3 = gate.decide(np.zeros(6), np.array([1, 1, 1, 0, 0, 0.]), test="sign", confidence=0.9)
  assert d4.accepted and d4.p_value == pytest.approx(1 / 16)
  assert not d3.accepted and d3.p_value == pytest.approx(1 / 8)


def test_the_decision_is_a_pure_function_of_its_inputs_and_seed():
  rng = np.random.default_rng(2)
  a, b = rng.uniform(size=15), rng.uniform(size=15)
  assert gate.decide(a, b, seed=5) == gate.decide(a, b, seed=5)
  assert set(gate.decide(a, b).as_record()) >= {"accepted", "mean_difference", "lower", "upper",
                                                "p_value", "wins", "losses", "ties"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(test="t-test"), "config.loop.gate"),
    (dict(confidence=1.0), "gate_confidence"),
])
def test_bad_settings_name_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gate.decide(np.zeros(3), np.ones(3), **kwargs)


def test_unpaired_scores_are_refused():
  with pytest.raises(ValueError, match="paired"):
    gate.decide(np.zeros(3), np.ones(4))
