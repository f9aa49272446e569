"""Task fields fail at start-up with the field's name, before any model or data loads."""

import sys

import pytest

from optimas_jax.methods import validate
from tests import experiment_files


def load(name, arg):
  return experiment_files.load(name).get_config(arg)


@pytest.mark.parametrize("name, arg, field, value, match", [
    ("geoqa_rl", "smoke", "system.writer_variable", "adapter", "writer_variable"),
    ("code", "smoke", "sandbox.processes", 0, "sandbox.processes"),
    ("code", "smoke", "sandbox.disk_mb", -1, "sandbox.disk_mb"),
    ("code", "smoke", "sandbox.network", "off", "sandbox.network"),
])
def test_a_bad_task_field_is_named_before_anything_loads(name, arg, field, value, match):
  config = load(name, arg)
  validate(config)                                # the shipped config is valid
  section, key = field.split(".")
  config[section][key] = value
  loaded = set(sys.modules)
  with pytest.raises(ValueError, match=match):
    validate(config)
  assert not {m for m in set(sys.modules) - loaded
              if m.startswith(("optimas_jax.llm.local", "optimas_jax.models.llama"))}
