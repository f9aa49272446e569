"""Compare-harness arms: typed values in the experiment file, capped alike."""

import pytest

from optimas_jax.methods import compare
from tests import experiment_files


@pytest.fixture(scope="module")
def config():
  return experiment_files.load("geoqa_rl").get_config("smoke")


def test_the_experiment_file_names_its_arms_and_overrides_keep_the_fields_types(config):
  arms, reported = compare.arms_of(config)
  assert [a.name for a in arms] == ["rl_lrf", "rl_metric", "prompt_lrf", "unoptimized"]
  assert reported is None
  prompt = arms[2]
  assert prompt == compare.Arm("prompt_lrf", "optimas", (("system.writer_variable", "prompt"),))
  cfg = compare.arm_config(config, 1, prompt, budget=500, sets_budget=False)
  assert cfg.system.writer_variable == "prompt"
  assert cfg.seed == 1 and cfg.loop.budget_runs == 500
  assert config.system.writer_variable == "lora"            # the base config is untouched
  assert compare.arm_config(config, 1, arms[0], 500, sets_budget=True).loop.budget_runs == 0
  steps = compare.Arm.from_config(dict(name="s", method="optimas",
                                       overrides={"optimizers.rl.steps": 3}), "arm")
  assert compare.arm_config(config, 0, steps, None, True).optimizers.rl.steps == 3


@pytest.mark.parametrize("entry, message", [
    ("x", "expected dict"), (dict(name="a"), "expected name, method"),
    (dict(name="a b", method="optimas"), "use an identifier"),
    (dict(name="a", method="sgd"), "config.method='sgd' is not known"),
    (dict(name="a", method="optimas", overrides=["x"]), "expected {'dotted.field': value}"),
    (dict(name="a", method="optimas", extra=1), "expected name, method")])
def test_bad_arms_name_the_problem(entry, message):
  with pytest.raises(ValueError, match=message):
    compare.Arm.from_config(entry, "config.arms[0]")


def test_arms_and_methods_do_not_mix_and_names_differ(config):
  with pytest.raises(ValueError, match="drop --methods"):
    compare.arms_of(config, ["optimas"])
  with config.unlocked():
    twice = config.copy_and_resolve_references()
  twice.arms = (dict(name="a", method="optimas"), dict(name="a", method="coordinate"))
  with pytest.raises(ValueError, match="arm names must differ"):
    compare.arms_of(twice)
  twice.arms = ()
  arms, reported = compare.arms_of(twice, ["coordinate"])
  assert [a.name for a in arms] == ["optimas", "coordinate"] and reported == {"coordinate"}


def test_a_capped_arm_refuses_bonferroni_spending(config):
  arm = compare.Arm("c", "coordinate", (("loop.gate_spending", "bonferroni"),))
  with pytest.raises(ValueError, match="gate_spending='bonferroni'.*series"):
    compare.arm_config(config, 0, arm, budget=500, sets_budget=False)
  setter = compare.Arm("o", "optimas", (("loop.gate_spending", "bonferroni"),))
  assert compare.arm_config(config, 0, setter, 500, True).loop.gate_spending == "bonferroni"
  assert compare.arm_config(config, 0, compare.Arm("c", "coordinate"), 500,
                            False).loop.gate_spending == "series"


@pytest.mark.parametrize("overrides, message", [
    ((("system.nope", 1),), "does not fit the config.*nope"),
    ((("optimizers.rl.steps", "three"),), "does not fit the config.*steps")])
def test_an_override_of_an_unknown_field_or_the_wrong_type_is_an_error(config, overrides,
                                                                        message):
  with pytest.raises(ValueError, match=message):
    compare.arm_config(config, 0, compare.Arm("a", "optimas", overrides), None, True)


def _result(arm, method, seed, test, extra, runs):
  return {"arm": arm, "method": method, "seed": seed, "test": test, "test_extra": extra,
          "budget_runs": runs, "history": [{"accepted": True}], "wall_s": 10.0,
          "counters": {"components": {"a": {"failures": 1}}}, "config": {}, "detail": {}}


def test_report_has_an_em_column_only_where_the_task_reports_em(tmp_path):
  plain = [_result("coordinate", "coordinate", s, 0.5 + 0.1 * s, {}, 100 + s) for s in (0, 1)]
  text = compare.write_report(plain, tmp_path, "cmd", "geoqa_hop")
  assert "test EM" not in text and "nan" not in text
  assert "| coordinate | 0.550 ± 0.050 | 100 (100-101) | 1.0 | 2 / - | 10 | 2 |" in text
  with_em = plain + [_result("unoptimized", "unoptimized", 0, 0.4, {"exact_match": 0.25}, 16)]
  text = compare.write_report(with_em, tmp_path, "cmd", "geoqa")
  assert "| unoptimized | 0.400 ± 0.000 | 0.250 | 16 (16-16) |" in text
  assert "Budgets of the iterating methods differ by at most 0.00% within a seed." in text
