"""LoRA adapters: validation, identity at init, merged == unmerged, files, SystemConfig."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.llm.base import SamplingParams
from optimas_jax.models import lora
from optimas_jax.system.config import SystemConfig
from optimas_jax.system.variables import ModelParameters


def _perturbed(adapter, seed=1, scale=0.3):
  """The adapter with random (non-zero) B factors."""
  rng = np.random.default_rng(seed)
  layers = jax.tree.map(np.asarray, adapter["layers"])
  for _, modules in sorted(layers.items()):
    for _, ab in sorted(modules.items()):
      ab["b"] = (scale * rng.standard_normal(ab["b"].shape)).astype(np.float32)
  return {**adapter, "layers": layers}


def test_init_adapter_is_identity_with_documented_layout(tiny_backbone):
  base = tiny_backbone.params
  cfg = lora.LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj"))
  adapter = lora.init_adapter(cfg, base, seed=0)
  assert adapter["base_digest"].dtype == np.uint8 and adapter["base_digest"].shape == (32,)
  assert adapter["scaling"].dtype == np.float32 and adapter["scaling"].shape == ()
  assert float(adapter["scaling"]) == 2.0
  assert sorted(adapter["layers"]) == ["layer_0", "layer_1"]
  ab = adapter["layers"]["layer_0"]["v_proj"]
  chex.assert_shape([ab["a"], ab["b"]], [(32, 4), (4, 16)])
  assert np.all(np.asarray(ab["b"]) == 0) and np.any(np.asarray(ab["a"]) != 0)
  assert lora.adapter_digest(adapter) == lora.base_digest(base)
  merged = lora.merge(base, adapter)
  chex.assert_trees_all_equal(merged, base)
  # Untargeted leaves are the base's own arrays (no copy of the model).
  embedding = lambda params: params["params"]["embed_tokens"]["embedding"]
  assert embedding(merged) is embedding(base)
  # Same seed, same adapter.
  chex.assert_trees_all_equal(lora.init_adapter(cfg, base, 0)["layers"], adapter["layers"])


@pytest.mark.parametrize("kwargs, words", [
    (dict(rank=0), ["rank=0", ">= 1"]),
    (dict(rank=17), ["rank=17", "v_proj", "rank <= 16"]),
    (dict(targets=("q_proj", "query")), ["['query']", "valid names", "gate_proj"]),
    (dict(dropout=0.1), ["dropout=0.1", "not implemented"]),
    (dict(targets=()), ["targets is empty"]),
])
def test_config_errors_name_field_and_fix(tiny_backbone, kwargs, words):
  with pytest.raises(ValueError) as e:
    lora.init_adapter(lora.LoraConfig(**kwargs), tiny_backbone.params, 0)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_merged_equals_unmerged_logits_and_merge_jits(tiny_backbone):
  module, base = tiny_backbone.module, tiny_backbone.params
  adapter = _perturbed(lora.init_adapter(lora.LoraConfig(rank=4, targets=("q_proj", "v_proj",
                                                                             "down_proj")),
                                         base, 0))
  ids = jnp.asarray(np.random.default_rng(0).integers(3, 512, (2, 7)), jnp.int32)
  mask = jnp.ones_like(ids).at[0, :2].set(0)
  apply = jax.jit(functools.partial(lora.adapted_apply, module), static_argnames="mode")
  merged = apply(base, adapter, ids, mask, mode="merged")
  unmerged = apply(base, adapter, ids, mask, mode="unmerged")
  plain = apply(base, None, ids, mask)
  assert float(jnp.max(jnp.abs(merged - plain))) > 1e-3     # the adapter does something
  np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(jax.jit(lora.merge)(base, adapter), lora.merge(base, adapter),
                              rtol=1e-6, atol=1e-6)


def test_adapter_for_another_base_is_refused(tiny_backbone):
  base = tiny_backbone.params
  other = jax.tree.map(lambda x: x, base)
  other["params"]["norm"] = {"scale": base["params"]["norm"]["scale"] * 2}
  adapter = lora.init_adapter(lora.LoraConfig(rank=2), other, 0)
  with pytest.raises(ValueError) as e:
    lora.check_compatible(adapter, base, where="my adapter")
  msg = str(e.value)
  assert "my adapter" in msg
  assert lora.base_digest(other)[:16] in msg and lora.base_digest(base)[:16] in msg
  assert lora.base_digest(base) == lora.base_digest(base)   # memoized, stable


def test_save_load_round_trip(tiny_backbone, tmp_path):
  cfg = lora.LoraConfig(rank=3, alpha=6.0, targets=("q_proj", "up_proj"))
  adapter = _perturbed(lora.init_adapter(cfg, tiny_backbone.params, 0))
  path = lora.save_adapter(tmp_path / "adapter", adapter, cfg)
  lora.save_adapter(path, adapter, cfg)            # overwrite in place, atomically
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
  loaded, loaded_cfg = lora.load_adapter(path)
  assert loaded_cfg == cfg
  chex.assert_trees_all_close(loaded, adapter)
  assert lora.adapter_digest(loaded) == lora.adapter_digest(adapter)
  with pytest.raises(FileNotFoundError, match="adapter_config.json"):
    lora.load_adapter(tmp_path / "missing")


def test_system_config_round_trip_keeps_uint8_and_scalar_leaves(tiny_backbone, tmp_path):
  adapter = _perturbed(lora.init_adapter(lora.LoraConfig(rank=2), tiny_backbone.params, 0))
  specs = {"writer": ModelParameters(init=lambda seed: adapter)}
  config = SystemConfig({"writer": adapter}, specs)
  config.save(tmp_path / "cfg")
  back = SystemConfig.load(tmp_path / "cfg", specs)["writer"]
  assert back["base_digest"].dtype == np.uint8 and back["scaling"].shape == ()
  assert back["scaling"].dtype == np.float32
  chex.assert_trees_all_equal(jax.device_get(adapter), back)
  lora.check_compatible(back, tiny_backbone.params)


def test_local_llm_samples_with_adapter_and_caches_the_merge(tiny_llm):
  base = tiny_llm.generator.params
  fresh = lora.init_adapter(lora.LoraConfig(rank=2), base, 0)
  # 32 prompts x 12 new tokens, short: the trainer tests' sampler program.
  params = SamplingParams(max_new_tokens=12, return_logprobs=True)
  prompts = [f"hello there {i}" for i in range(32)]
  plain = tiny_llm.generate(prompts, params)
  same = tiny_llm.generate(prompts, params, adapter=fresh)      # B = 0: the base model
  assert [g.token_ids for g in same] == [g.token_ids for g in plain]
  changed = _perturbed(fresh, scale=3.0)
  assert tiny_llm.variables(changed) is tiny_llm.variables(changed)   # merged once
  sampled = tiny_llm.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0,
                                                      return_logprobs=True),
                              rng=jax.random.key(0), adapter=changed)
  assert all(g.token_ids is not None and len(g.logprobs) == len(g.token_ids) for g in sampled)
  lp_base = tiny_llm.option_logprobs(prompts[:2], ["yes", "no"])
  lp_fresh = tiny_llm.option_logprobs(prompts[:2], ["yes", "no"], adapter=fresh)
  lp_changed = tiny_llm.option_logprobs(prompts[:2], ["yes", "no"], adapter=changed)
  np.testing.assert_allclose(lp_fresh, lp_base, rtol=1e-6)
  assert not np.allclose(lp_changed, lp_base)
  other = lora.init_adapter(lora.LoraConfig(rank=2),
                            jax.tree.map(lambda x: x * 1.5, base), 0)
  with pytest.raises(ValueError, match="base weights"):
    tiny_llm.generate(prompts, params, adapter=other)
