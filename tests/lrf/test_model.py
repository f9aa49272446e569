import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from optimas_jax.lrf.config import validate_lrf_config
from optimas_jax.lrf.train import make_optimizer
from tests.lrf.conftest import make_lrf, small_cfg


def test_vmapped_heads_start_different(backbone):
  lrf = make_lrf(backbone, trainable="heads")
  trainable, _ = lrf.init(jax.random.PRNGKey(0), backbone.params)
  kernel = trainable["params"]["heads"]["Dense_0"]["kernel"]
  chex.assert_shape(kernel, (2, backbone.hidden_size, 1))
  assert not np.allclose(kernel[0], kernel[1])


def test_component_ids_pick_their_head(backbone):
  lrf = make_lrf(backbone, trainable="heads")
  t, f = lrf.init(jax.random.PRNGKey(0), backbone.params)
  v = lrf.merge(t, f)
  tokens = jnp.array([[101, 7, 8, 102]] * 2)
  r = lrf.score(v, tokens, jnp.array([0, 1]))
  assert r[0] != r[1]                      # same text, different heads
  chex.assert_shape(r, (2,))


@pytest.mark.parametrize("trainable", ["heads", "top", "lora", "full"])
def test_frozen_params_get_no_optimizer_state(backbone, trainable):
  lrf = make_lrf(backbone, trainable=trainable)
  t, f = lrf.init(jax.random.PRNGKey(0), backbone.params)
  opt = make_optimizer(small_cfg().optim, 10).init(t)
  n_train = sum(x.size for x in jax.tree.leaves(t))
  # Adam keeps mu and nu: exactly 2x the trainable size, nothing frozen.
  n_opt = sum(x.size for x in jax.tree.leaves(opt) if x.ndim > 0)
  assert n_opt == 2 * n_train
  frozen_paths = set(traverse_util.flatten_dict(f))
  train_paths = set(traverse_util.flatten_dict(t["params"]))
  assert not frozen_paths & train_paths
  total = sum(x.size for x in jax.tree.leaves(backbone.params))
  n_backbone_train = sum(x.size for x in jax.tree.leaves(t["params"].get("backbone", {})))
  if trainable == "heads":
    assert "backbone" not in t["params"] and not t["lora"]
  elif trainable == "top":
    assert set(t["params"]["backbone"]) == {"layer_1"}
  elif trainable == "lora":
    assert t["lora"] and "backbone" not in t["params"]
    # B starts at 0: the adapted model equals the base model.
    tokens = jnp.array([[101, 7, 8, 102]])
    base = lrf.merge({"params": t["params"], "lora": {}}, f)
    np.testing.assert_allclose(lrf.score(lrf.merge(t, f), tokens, jnp.array([0])),
                               lrf.score(base, tokens, jnp.array([0])))
  else:
    assert n_backbone_train == total and not f


def test_bad_config_names_field_and_fix():
  c = small_cfg(trainable="some")
  with pytest.raises(ValueError, match=r"config.lrf.trainable.*heads"):
    validate_lrf_config(c)
  c = small_cfg(groups_per_batch=3)
  with pytest.raises(ValueError, match="groups_per_batch.*multiple of 2"):
    validate_lrf_config(c, num_devices=2)
  c = small_cfg(buckets=(32, 48))
  with pytest.raises(ValueError, match="buckets.*max_len"):
    validate_lrf_config(c)
  validate_lrf_config(small_cfg(fsdp=4))          # devices unknown at start-up: checked later
  with pytest.raises(ValueError, match="config.lrf.fsdp.*divisor of the 4 devices"):
    validate_lrf_config(small_cfg(fsdp=3), num_devices=4)


def test_decoder_backbone_last_token_pooling():
  from optimas_jax.lrf.model import build_lrf
  from optimas_jax.models.registry import load_backbone
  bb = load_backbone("tiny-llama")
  with pytest.raises(ValueError, match="pooling"):
    build_lrf(bb, 2, small_cfg())
  lrf = build_lrf(bb, 2, small_cfg(pooling="last", trainable="top"))
  t, f = lrf.init(jax.random.PRNGKey(0), bb.params)
  assert "norm" in t["params"]["backbone"]
  r = lrf.score(lrf.merge(t, f), jnp.array([[5, 6, 7, bb.pad_id]]), jnp.array([1]),
                mask=jnp.array([[1, 1, 1, 0]]))
  chex.assert_tree_all_finite(r)


def test_bad_dtypes_name_field_and_fix():
  with pytest.raises(ValueError, match=r"config.lrf.compute_dtype.*'bfloat16'"):
    validate_lrf_config(small_cfg(compute_dtype="float16"))
  with pytest.raises(ValueError, match=r"config.lrf.dtype.*'float32'"):
    validate_lrf_config(small_cfg(dtype="fp32"))
  with pytest.raises(ValueError, match=r"config.lrf.compute_dtype.*dtype='float32'"):
    validate_lrf_config(small_cfg(dtype="bfloat16", compute_dtype="float32"))
  validate_lrf_config(small_cfg(compute_dtype="bfloat16"))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_mixed_precision_keeps_float32_parameters_and_computes_in_bfloat16(name):
  from optimas_jax.lrf.model import build_lrf
  from optimas_jax.models.registry import load_backbone
  bb = load_backbone(name)
  kw = dict(pooling="last") if name == "tiny-llama" else {}
  full = build_lrf(bb, 2, small_cfg(trainable="full", **kw))
  mixed = build_lrf(bb, 2, small_cfg(trainable="full", compute_dtype="bfloat16", **kw))
  t32, f32 = full.init(jax.random.PRNGKey(0), bb.params)
  t16, f16 = mixed.init(jax.random.PRNGKey(0), bb.params)
  # The same float32 parameters, whatever the products' precision.
  chex.assert_trees_all_equal(t32, t16)
  assert {x.dtype for x in jax.tree.leaves((t16, f16))} == {jnp.dtype(jnp.float32)}
  tokens = jnp.array([[5, 6, 7, 8, 9, 10, bb.pad_id, bb.pad_id]] * 3)
  ids = jnp.array([0, 1, 0])

  def score(trainable, lrf):
    return lrf.score(lrf.merge(trainable, f16), tokens, ids)

  loss = lambda trainable, lrf: jnp.sum(score(trainable, lrf) ** 2)
  jaxpr = str(jax.make_jaxpr(loss, static_argnums=1)(t16, mixed))
  assert "bf16" in jaxpr and "preferred_element_type=float32" in jaxpr
  assert "bf16" not in str(jax.make_jaxpr(loss, static_argnums=1)(t32, full))
  # Jitted: op-by-op dispatch compiles every op (seconds on a tiny model).
  score, grad = jax.jit(score, static_argnums=1), jax.jit(jax.grad(loss), static_argnums=1)
  r32, r16 = score(t32, full), score(t16, mixed)
  assert r16.dtype == jnp.float32
  np.testing.assert_allclose(r16, r32, rtol=5e-2, atol=5e-2)
  assert not np.array_equal(r16, r32)          # the products did run in bfloat16
  g32, g16 = grad(t32, full), grad(t16, mixed)
  # Gradients reach the float32 parameters through the casts, in float32.
  assert {x.dtype for x in jax.tree.leaves(g16)} == {jnp.dtype(jnp.float32)}
  a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g32, g16))
  assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99
