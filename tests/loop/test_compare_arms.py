"""Compare-harness arms: a method on the config with overrides, capped alike."""

import importlib.util
import pathlib

import pytest

from optimas_jax import compare

ROOT = pathlib.Path(__file__).parents[2]


@pytest.fixture(scope="module")
def config():
  spec = importlib.util.spec_from_file_location("geoqa_rl", ROOT / "experiments" / "geoqa_rl.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("smoke")


def test_arm_parses_overrides_with_the_fields_types(config):
  arm = compare.Arm.parse("prompt:optimas:system.writer_variable=prompt;optimizers.rl.steps=3")
  assert arm == compare.Arm("prompt", "optimas", (("system.writer_variable", "prompt"),
                                                  ("optimizers.rl.steps", "3")))
  cfg = compare.arm_config(config, 1, arm, budget=500, sets_budget=False)
  assert cfg.system.writer_variable == "prompt" and cfg.optimizers.rl.steps == 3
  assert cfg.seed == 1 and cfg.loop.budget_runs == 500
  assert config.system.writer_variable == "lora"            # the base config is untouched
  setter = compare.arm_config(config, 1, compare.Arm("rl", "optimas"), 500, sets_budget=True)
  assert setter.loop.budget_runs == 0


@pytest.mark.parametrize("text, message", [
    ("x", "expected NAME:METHOD"), ("a:sgd", "unknown method"),
    ("a:optimas:system.writer_variable", "not FIELD=VALUE")])
def test_bad_arms_name_the_problem(text, message):
  with pytest.raises(ValueError, match=message):
    compare.Arm.parse(text)


def test_a_capped_arm_refuses_bonferroni_spending(config):
  arm = compare.Arm.parse("c:coordinate:loop.gate_spending=bonferroni")
  with pytest.raises(ValueError, match="gate_spending='bonferroni'.*series"):
    compare.arm_config(config, 0, arm, budget=500, sets_budget=False)
  setter = compare.arm_config(config, 0, compare.Arm.parse("o:optimas:loop.gate_spending="
                                                           "bonferroni"), 500, sets_budget=True)
  assert setter.loop.gate_spending == "bonferroni"          # a fixed plan may use it
  assert compare.arm_config(config, 0, compare.Arm("c", "coordinate"), 500,
                            False).loop.gate_spending == "series"


def test_unknown_override_field_is_an_error(config):
  with pytest.raises(ValueError, match="no field 'system.nope'"):
    compare.arm_config(config, 0, compare.Arm.parse("a:optimas:system.nope=1"), None, True)


def _result(arm, method, seed, test, extra, runs):
  return {"arm": arm, "method": method, "seed": seed, "test": test, "test_extra": extra,
          "budget_runs": runs, "history": [{"accepted": True}], "wall_s": 10.0,
          "counters": {"components": {"a": {"failures": 1}}}, "config": {}}


def test_report_has_an_em_column_only_where_the_task_reports_em(tmp_path):
  plain = [_result("coordinate", "coordinate", s, 0.5 + 0.1 * s, {}, 100 + s) for s in (0, 1)]
  text = compare.write_report(plain, tmp_path, "cmd", "geoqa_hop")
  assert "test EM" not in text and "nan" not in text
  assert "| coordinate | 0.550 ± 0.050 | 100 (100-101) | 1.0 | 2 / - | 10 | 2 |" in text
  with_em = plain + [_result("unoptimized", "unoptimized", 0, 0.4, {"exact_match": 0.25}, 16)]
  text = compare.write_report(with_em, tmp_path, "cmd", "geoqa")
  assert "| unoptimized | 0.400 ± 0.000 | 0.250 | 16 (16-16) |" in text
  assert "Budgets of the iterating methods differ by at most 0.00% within a seed." in text
