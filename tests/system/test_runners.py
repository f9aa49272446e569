"""Every runner gives the local run's traces: a local Ray cluster's actors (one model load
per actor) and, in tests/distributed, two JAX processes."""

import functools
import pathlib

import pytest

from optimas_jax.system import runners
from tests.system import runner_system

ROOT = pathlib.Path(__file__).parents[2]


def _assert_same(a, b):
  """Equal records; floats to 1e-6 relative: a JAX model's batched matmul rounds by the
  batch's size (XLA:CPU picks its kernel by shape), and an actor's block is smaller."""
  if isinstance(a, float) or isinstance(b, float):
    assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
  elif isinstance(a, dict):
    assert a.keys() == b.keys()
    for k in a:
      _assert_same(a[k], b[k])
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      _assert_same(x, y)
  else:
    assert a == b


def test_local_records_fail_one_example_and_keep_order():
  rec = runner_system.records(runner_system.build())
  assert [i for i, _ in rec["run"]["failures"]] == [2]
  assert rec["run"]["predictions"][2] is None
  assert rec["run"]["predictions"][0]["draft"].startswith("P:alpha:")
  # Rollouts of a sampled step with fresh sample indices differ from the run.
  assert rec["rollouts"]["predictions"][0] != rec["run"]["predictions"][0]
  assert rec["counters"]["components"]["draft"]["failures"] == 1
  # The failed example stays failed in both rollout samples, in its slots (2 and 9).
  assert [i for i, p in enumerate(rec["rollouts"]["predictions"]) if p is None] == [2, 9]


@pytest.fixture(scope="module")
def ray_cluster():
  ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")
  ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
           _node_ip_address="127.0.0.1",
           runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})   # workers import tests/
  yield ray
  ray.shutdown()


def test_ray_actors_give_the_local_records(ray_cluster, tmp_path):
  log = tmp_path / "loads.txt"
  runner = runners.RayRunner(functools.partial(runner_system.build, str(log)), num_actors=2)
  system = runner_system.build()
  system.runner = runner
  remote = runner_system.records(system)
  remote_again = runner_system.records(system)          # a second round, same actors
  local = runner_system.records(runner_system.build())
  _assert_same(remote["run"], local["run"])
  _assert_same(remote["rollouts"], local["rollouts"])
  _assert_same(remote["scores"], local["scores"])
  # Calls, failures and retries add up to the local run's; batches are per actor block.
  for name, row in local["counters"]["components"].items():
    got = dict(remote["counters"]["components"][name])
    assert got.pop("batches") == 2 * row["batches"]
    assert got == {k: v for k, v in row.items() if k != "batches"}
  assert remote["counters"]["system_runs"] == local["counters"]["system_runs"] == 7
  assert remote["counters"]["partial_runs"] == local["counters"]["partial_runs"] == 12
  _assert_same(remote_again["run"], local["run"])
  pids = log.read_text().split()
  assert len(pids) == 2 and len(set(pids)) == 2         # one load per actor, not per call
  runner.close()


def test_blocks_cover_in_order():
  blocks = [runners.processes.share(7, i, 3) for i in range(3)]
  assert [list(b) for b in blocks] == [[0, 1, 2], [3, 4], [5, 6]]
  assert [len(runners.processes.share(2, i, 3)) for i in range(3)] == [1, 1, 0]


def test_config_picks_the_runner(ray_cluster):
  from experiments import geoqa
  from optimas_jax.loop import config as loop_config
  from optimas_jax.methods import placement
  config = geoqa.get_config()
  assert isinstance(placement.runner(config), runners.LocalRunner)
  config.execution.backend = "ray"
  config.execution.ray_actors = 3
  runner = placement.runner(config)      # actors start at the first batch, not here
  assert isinstance(runner, runners.RayRunner) and runner.num_actors == 3
  assert runner.factory.func is placement.build_system and runner.factory.args == (config,)
  config.execution.backend = "dask"
  with pytest.raises(ValueError, match=r"config.execution.backend: got 'dask'"):
    loop_config.validate(config, trains_lrf=False)
