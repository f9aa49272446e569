"""optimas_jax.checkpoint: the loop's dict form, the LRF TrainState form, init_from paths."""

import jax
import numpy as np
import pytest

from optimas_jax import atomic, checkpoint
from optimas_jax.checkpoint import resolve_init_from
from optimas_jax.lrf.buckets import plan_epoch
from optimas_jax.lrf.train import Trainer
from tests.lrf.conftest import make_lrf, small_cfg


def test_init_from_forms(tmp_path):
  for step in (2, 5):
    (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
  ck = tmp_path / "checkpoints"
  assert resolve_init_from(str(tmp_path)) == (ck, 5)
  assert resolve_init_from(str(tmp_path / "2")) == (ck, 2)
  assert resolve_init_from(str(ck / "2")) == (ck, 2)
  assert resolve_init_from(str(ck)) == (ck, 5)
  with pytest.raises(FileNotFoundError, match="config.init_from"):
    resolve_init_from(str(tmp_path / "nothing"))


def test_loop_form_save_restore_and_latest(tmp_path):
  """manager(dir) / save(mngr, step, arrays, meta) / restore(mngr, step, like)."""
  mngr = checkpoint.manager(tmp_path / "checkpoints")
  assert checkpoint.restore_latest(mngr, {"w": np.zeros(3, np.float32)}) is None
  for step in (1, 2):
    arrays = {"w": np.arange(3, dtype=np.float32) * step, "n": {"b": np.ones((2, 2), np.int32)}}
    checkpoint.save(mngr, step, arrays, {"iteration": step, "names": ["a"]})
  like = {"w": np.zeros(3, np.float32), "n": {"b": np.zeros((2, 2), np.int32)}}
  arrays, meta = checkpoint.restore(checkpoint.manager(tmp_path / "checkpoints"), 1, like)
  np.testing.assert_array_equal(arrays["w"], [0.0, 1.0, 2.0])
  assert meta == {"iteration": 1, "names": ["a"]}
  arrays, meta = checkpoint.restore_latest(mngr, like)
  np.testing.assert_array_equal(arrays["w"], [0.0, 2.0, 4.0])
  assert meta["iteration"] == 2 and mngr.latest_step() == 2


def test_train_state_restore_gives_bit_identical_next_step(backbone, groups, tmp_path):
  train = groups[0]
  cfg = small_cfg(trainable="top")
  t = Trainer(make_lrf(backbone, trainable="top"), cfg, 2, total_steps=20)
  state = t.init_state(jax.random.PRNGKey(0), backbone.params)
  t.prepare(train, state.frozen)
  plan = plan_epoch(train, (32, 64), 4, 0, 0)
  batch = lambda i: t.batch(train, plan[i][1], plan[i][0])
  rng = jax.random.PRNGKey(3)
  state, _ = t.step_fn(state, batch(0), rng)
  mngr = checkpoint.manager(tmp_path / "checkpoints")
  checkpoint.save(mngr, int(state.step), state, {"epoch": 0})
  like = t.init_state(jax.random.PRNGKey(9), backbone.params)
  restored, meta = checkpoint.restore_latest(checkpoint.manager(tmp_path / "checkpoints"), like)
  assert meta == {"epoch": 0} and int(restored.step) == 1
  a, ma = t.step_fn(state, batch(1), rng)
  b, mb = t.step_fn(restored, batch(1), rng)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(ma), jax.device_get(mb))


def test_replaced_directory_is_all_or_nothing(tmp_path):
  """A clean exit swaps the folder in whole; an exception leaves the old one untouched."""
  target = tmp_path / "adapter"
  with atomic.replaced_directory(target) as tmp:
    (tmp / "a.txt").write_text("first")
  assert (target / "a.txt").read_text() == "first"
  with pytest.raises(RuntimeError, match="mid-write"):
    with atomic.replaced_directory(target) as tmp:
      (tmp / "a.txt").write_text("half")
      raise RuntimeError("mid-write")
  assert (target / "a.txt").read_text() == "first"
  with atomic.replaced_directory(target) as tmp:
    (tmp / "b.txt").write_text("second")
  assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp or .old left
