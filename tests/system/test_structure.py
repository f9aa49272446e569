"""Construction of systems: topological order and every construction error."""

import pytest

from optimas_jax import system as osys
from tests.system.helpers import make_diamond, upper

METRIC = osys.Metric(lambda ex, p: 1.0, ("b",))


def test_topological_order_with_parallel_branches_breaks_ties_by_declaration():
  s = make_diamond()
  # join is declared first but depends on both branches; right is declared
  # before left, so among the two ready branches right runs first.
  assert s.order == ("right", "left", "join")
  assert s.parents["join"] == ["right", "left"]
  assert s.downstream("left") == ("left", "join")
  assert s.downstream("join") == ("join",)


def test_order_is_deterministic_across_constructions():
  assert {make_diamond().order for _ in range(5)} == {("right", "left", "join")}


def test_cycle_is_rejected():
  c1 = osys.Component("c1", "", ("x",), ("y",), upper)
  c2 = osys.Component("c2", "", ("y",), ("x",), upper)
  with pytest.raises(osys.SystemDefinitionError, match="cycle"):
    osys.System([c1, c2], ["a"], osys.Metric(lambda e, p: 1.0, ("y",)))


def test_two_writers_of_one_field_are_rejected():
  c1 = osys.Component("c1", "", ("a",), ("b",), upper)
  c2 = osys.Component("c2", "", ("a",), ("b",), upper)
  with pytest.raises(osys.SystemDefinitionError, match="written by both 'c1' and 'c2'"):
    osys.System([c1, c2], ["a"], METRIC)


def test_input_nobody_provides_is_rejected():
  c = osys.Component("c", "", ("missing",), ("b",), upper)
  with pytest.raises(osys.SystemDefinitionError, match=r"reads \['missing'\]"):
    osys.System([c], ["a"], METRIC)


def test_unknown_metric_field_is_rejected():
  c = osys.Component("c", "", ("a",), ("b",), upper)
  with pytest.raises(osys.SystemDefinitionError, match=r"metric 'score' reads \['nope'\]"):
    osys.System([c], ["a"], osys.Metric(lambda e, p: 1.0, ("nope",)))


def test_writing_a_system_input_is_rejected():
  c = osys.Component("c", "", ("a",), ("a",), upper)
  with pytest.raises(osys.SystemDefinitionError, match="system input"):
    osys.System([c], ["a"], osys.Metric(lambda e, p: 1.0, ("a",)))


def test_duplicate_component_names_are_rejected():
  c = osys.Component("c", "", ("a",), ("b",), upper)
  with pytest.raises(osys.SystemDefinitionError, match="duplicate"):
    osys.System([c, c], ["a"], METRIC)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="bad name"), "identifier"),
    (dict(input_fields="a"), "not the string"),
    (dict(output_fields=()), "empty"),
    (dict(output_fields=("b", "b")), "duplicates"),
    (dict(call=None), "callable"),
    (dict(variable="a prompt"), "variable must be"),
])
def test_component_errors(kwargs, match):
  args = dict(name="c", description="", input_fields=("a",), output_fields=("b",), call=upper)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    osys.Component(**args)


def test_unknown_component_in_downstream():
  with pytest.raises(KeyError, match="no component 'nope'"):
    make_diamond().downstream("nope")


@pytest.mark.parametrize("spec, value, match", [
    (osys.Prompt("x"), "", "non-empty"),
    (osys.Hyperparameters({"k": osys.IntRange(1, 5)}, {"k": 1}), {"k": 9}, r"k=9: must be an int"),
    (osys.Hyperparameters({"k": osys.IntRange(1, 5)}, {"k": 1}), {"j": 1}, "missing"),
    (osys.ModelChoice(("a", "b"), "a"), "c", "not one of"),
    (osys.Hyperparameters({"t": osys.FloatRange(0, 1)}, {"t": 0.5}), {"t": float("nan")},
     "must be a float"),
])
def test_variable_validation_names_the_field(spec, value, match):
  with pytest.raises(osys.VariableError, match=match):
    spec.validate(value, "config['c']")


def test_hyperparameter_grid_and_sampling():
  import numpy as np
  spec = osys.Hyperparameters({"k": osys.Choice((1, 5)), "m": osys.Choice(("x", "y"))},
                              {"k": 1, "m": "x"})
  assert len(spec.grid()) == 4
  rng = np.random.default_rng(0)
  for _ in range(10):
    spec.validate(spec.sample(rng), "sample")
  cont = osys.Hyperparameters({"t": osys.FloatRange(1e-3, 1.0, log=True)}, {"t": 0.1})
  assert cont.grid() is None
