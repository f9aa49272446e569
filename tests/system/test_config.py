"""SystemConfig: round trip through JSON + arrays, immutability, hashing."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax import system as osys


def _params(seed):
  rng = np.random.default_rng(seed)
  return {"dense": {"kernel": rng.normal(size=(3, 2)).astype(np.float32),
                    "bias": np.zeros(2, np.float32)},
          "scale": jnp.ones((4,), jnp.bfloat16)}


SPECS = {
    "writer": osys.Prompt("Write the query."),
    "retriever": osys.Hyperparameters({"k": osys.Choice((1, 5, 10)),
                                       "alpha": osys.FloatRange(0.0, 1.0)},
                                      {"k": 5, "alpha": 0.5}),
    "reader": osys.ModelChoice(("small", "large"), "small"),
    "selector": osys.ModelParameters(_params, seed=1),
}


def test_round_trip_through_json_and_arrays(tmp_path):
  cfg = osys.SystemConfig.defaults(SPECS).override(writer="Ask twice.", reader="large")
  cfg.save(tmp_path / "cfg")
  back = osys.SystemConfig.load(tmp_path / "cfg", SPECS)
  assert back["writer"] == "Ask twice." and back["reader"] == "large"
  assert back["retriever"] == {"k": 5, "alpha": 0.5}
  chex.assert_trees_all_equal(back["selector"], jax_tree := cfg["selector"])
  assert back["selector"]["scale"].dtype == jnp.bfloat16
  assert all(back.variable_hash(n) == cfg.variable_hash(n) for n in SPECS)
  del jax_tree


def test_save_overwrites_atomically(tmp_path):
  cfg = osys.SystemConfig.defaults(SPECS)
  cfg.save(tmp_path / "cfg")
  cfg.override(writer="new").save(tmp_path / "cfg")
  assert osys.SystemConfig.load(tmp_path / "cfg", SPECS)["writer"] == "new"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg"]


def test_override_is_a_new_config():
  cfg = osys.SystemConfig.defaults(SPECS)
  new = cfg.override(retriever={"k": 10, "alpha": 0.1})
  assert cfg["retriever"]["k"] == 5 and new["retriever"]["k"] == 10
  assert cfg.variable_hash("retriever") != new.variable_hash("retriever")
  assert cfg.variable_hash("writer") == new.variable_hash("writer")


def test_override_validates():
  cfg = osys.SystemConfig.defaults(SPECS)
  with pytest.raises(osys.VariableError, match=r"config\['reader'\]"):
    cfg.override(reader="huge")
  with pytest.raises(KeyError, match="no optimizable component named"):
    cfg.override(nobody="x")


def test_param_hash_sees_value_changes():
  cfg = osys.SystemConfig.defaults(SPECS)
  p = cfg["selector"]
  changed = {**p, "dense": {**p["dense"], "bias": p["dense"]["bias"] + 1}}
  assert cfg.override(selector=changed).variable_hash("selector") != cfg.variable_hash("selector")


def test_load_rejects_kind_mismatch(tmp_path):
  osys.SystemConfig.defaults(SPECS).save(tmp_path / "cfg")
  other = {**SPECS, "reader": osys.Prompt("x")}
  with pytest.raises(ValueError, match="saved as model_choice"):
    osys.SystemConfig.load(tmp_path / "cfg", other)


def test_json_values_leave_out_model_parameters():
  cfg = osys.SystemConfig.defaults(SPECS)
  assert set(cfg.json_values()) == {"writer", "retriever", "reader"}
