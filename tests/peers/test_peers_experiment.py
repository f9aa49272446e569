"""experiments/peers.py: any task's experiment plus the peers' knobs, and its errors."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parents[2]


def _load(name):
  spec = importlib.util.spec_from_file_location(f"test_{name}", ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("task", ["geoqa", "pubmedqa", "hotpotqa", "code"])
def test_each_task_gets_its_own_config_plus_the_peers_knobs(task):
  peers = _load("peers")
  config = peers.get_config(f"{task},smoke")
  plain = _load(task).get_config("smoke")
  assert config.peers.max_wall_s == 0.0 and config.peers.gepa_minibatch == 3
  del config.peers
  assert config.to_json(sort_keys=True) == plain.to_json(sort_keys=True)


def test_the_geoqa_file_of_the_readme_table_is_the_same_config():
  a = _load("peers").get_config("geoqa,smoke").to_json(sort_keys=True)
  assert a == _load("peers_geoqa").get_config("smoke").to_json(sort_keys=True)


def test_bad_args_name_the_experiments_and_the_task_files_args():
  peers = _load("peers")
  with pytest.raises(ValueError, match="'nope' is not an experiment; known: .*'pubmedqa'"):
    peers.get_config("nope,smoke")
  with pytest.raises(ValueError, match="first arg '' is not an experiment"):
    peers.get_config(None)
  with pytest.raises(ValueError, match=r"experiments/pubmedqa.py: unknown config arg\(s\) \['smok'\]"):
    peers.get_config("pubmedqa,smok")
