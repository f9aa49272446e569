"""experiments/regate.py re-decides logged gates with the exact sign test and the run's spending."""

import json

import pytest

from tests import experiment_files


@pytest.fixture(scope="module")
def regate():
  return experiment_files.load("regate")


def _gate(iteration, wins, losses, ties, accepted=True, test="paired_bootstrap"):
  return {"event": "iteration", "iteration": iteration, "component": "retriever",
          "accepted": accepted, "gate": {"accepted": accepted, "test": test, "p_value": 0.03,
                                         "wins": wins, "losses": losses, "ties": ties}}


def test_logged_decisions_are_re_decided(regate, tmp_path):
  run = tmp_path / "run-seed0"
  run.mkdir()
  records = [{"event": "init"}, _gate(0, 1, 3, 12, accepted=False), _gate(1, 4, 1, 11),
             _gate(2, 9, 0, 7), _gate(3, 9, 0, 7, test="exact")]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  (run / "summary.json").write_text(json.dumps({"iterations": 4}))
  rows = regate.regate(tmp_path)
  assert [(r["wins"], r["losses"], r["gate_index"]) for r in rows] == [(4, 1, 2), (9, 0, 3)]
  four_one, nine_zero = rows
  assert four_one["sign_p"] == pytest.approx(6 / 32) and not four_one["passes_alone"]
  assert nine_zero["sign_p"] == pytest.approx(2 ** -9) and nine_zero["passes_spent"]
  assert nine_zero["alpha_spent"] == pytest.approx(0.1 / 12)
  text = regate.markdown(rows)
  assert "Accepted decisions: 2 in 1 runs." in text and "FAIL" in text
