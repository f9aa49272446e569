"""The validation gate: paired tests on per-example scores, a pure function."""

import numpy as np
import pytest

from optimas_jax.loop import gate


def test_one_lucky_item_out_of_16_is_rejected_but_plain_mean_accepts_it():
  incumbent = np.zeros(16)
  candidate = incumbent.copy()
  candidate[3] = 1.0                                  # +1 item, +6.25 points
  for test in ("exact", "paired_bootstrap", "sign"):
    d = gate.decide(incumbent, candidate, test=test, confidence=0.9)
    assert not d.accepted and d.wins == 1 and d.losses == 0 and d.ties == 15
  assert gate.decide(incumbent, candidate, test="mean").accepted


def test_a_consistent_improvement_is_accepted_with_its_interval():
  rng = np.random.default_rng(0)
  incumbent = rng.uniform(0, 0.5, 20)
  candidate = incumbent + rng.uniform(0.05, 0.2, 20)      # better on every example
  d = gate.decide(incumbent, candidate, test="paired_bootstrap", confidence=0.9, seed=1)
  assert d.accepted and 0 < d.lower <= d.mean_difference <= d.upper
  assert d.tail_share == 0.0 and d.p_value is None       # a tail share is not a p-value
  e = gate.decide(incumbent, candidate, confidence=0.9)  # 20 sizes: sampled flips, none as large
  assert e.accepted and e.p_value == pytest.approx(1 / (gate.SAMPLED_FLIPS + 1)) and not e.exact
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
                                                "p_value", "tail_share", "alpha", "exact",
                                                "wins", "losses", "ties"}


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


def test_four_wins_one_loss_is_p_019_not_a_bootstrap_tail_share():
  # The old gate logged the bootstrap's tail share as "p" (0.034 in one run) for 4 wins, 1 loss.
  incumbent = np.zeros(16)
  candidate = np.array([1, 1, 1, 1, -1] + [0] * 11, float)
  exact = gate.decide(incumbent, candidate, confidence=0.9)
  assert exact.p_value == pytest.approx(6 / 32) and not exact.accepted
  boot = gate.decide(incumbent, candidate, test="paired_bootstrap", confidence=0.9, seed=0)
  assert boot.tail_share < exact.p_value / 1.5 and boot.p_value is None


def test_the_exact_permutation_p_value_by_enumeration():
  # Differences 0.5, 0.25, -0.1: of the 8 sign flips, sums >= 0.65 are (+,+,-) and (+,+,+).
  d = gate.decide(np.zeros(4), np.array([0.5, 0.25, -0.1, 0.0]), confidence=0.9)
  assert d.exact and d.p_value == pytest.approx(2 / 8)
  # 20 distinct sizes is past enumeration: sampled, with the (k + 1) / (R + 1) correction.
  many = np.linspace(0.01, 0.2, 20)
  s = gate.decide(np.zeros(20), many, confidence=0.9, seed=3)
  assert not s.exact and 0 < s.p_value <= 2 / (gate.SAMPLED_FLIPS + 1)


def test_the_run_level_is_spent_across_its_gates():
  assert gate.level(0.9, "none", 5, 10) == pytest.approx(0.1)
  assert gate.level(0.9, "bonferroni", 1, 10) == pytest.approx(0.01)
  assert gate.level(0.9, "bonferroni", 12, 10) == pytest.approx(0.1 / 12)   # past the plan
  series = [gate.level(0.9, "series", k, 0) for k in range(1, 10000)]
  assert series[:3] == pytest.approx([0.05, 0.1 / 6, 0.1 / 12]) and sum(series) < 0.1
  # 6 wins and no loss pass one gate alone (p = 1/64) but not a 10-gate run's (0.01).
  candidate = np.array([1.0] * 6 + [0.0] * 10)
  alone = gate.decide(np.zeros(16), candidate, confidence=0.9)
  in_run = gate.decide(np.zeros(16), candidate, confidence=0.9,
                       alpha=gate.level(0.9, "bonferroni", 1, 10))
  assert alone.accepted and not in_run.accepted
  with pytest.raises(ValueError, match="gate_spending"):
    gate.level(0.9, "holm", 1, 3)


def test_the_family_wise_error_of_a_run_of_null_gates_is_at_most_alpha():
  # 10 gates of changes that are no better (fair coin per non-tied item): the share of runs
  # that keep any of them stays under 1 - confidence with spending, and not without it.
  rng = np.random.default_rng(0)
  runs = 400
  kept = {"series": 0, "bonferroni": 0, "none": 0}
  for _ in range(runs):
    gates = [rng.choice([-1.0, 0.0, 1.0], size=16, p=[0.3, 0.4, 0.3]) for _ in range(10)]
    for spending in kept:
      kept[spending] += any(
          gate.decide(np.zeros(16), g, alpha=gate.level(0.9, spending, k + 1, 10)).accepted
          for k, g in enumerate(gates))
  assert kept["series"] / runs <= 0.1 and kept["bonferroni"] / runs <= 0.1
  assert kept["none"] / runs > 0.2
