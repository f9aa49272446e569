"""HF-format weights: read safetensors, convert names/layouts to Flax params.

The reader parses the safetensors header itself and memory-maps the data,
so bf16 checkpoints load without torch and a float32 copy of the whole
model never exists at once (each tensor is cast as it is converted).
"""

from __future__ import annotations

import json
import pathlib
import struct
from typing import Callable, Mapping

import jax.numpy as jnp
import ml_dtypes
import numpy as np

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointError(ValueError):
  """A checkpoint is unreadable or not what the model expects."""


def read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Name -> read-only memory-mapped array for one ``.safetensors`` file."""
  path = pathlib.Path(path)
  try:
    with open(path, "rb") as f:
      (header_len,) = struct.unpack("<Q", f.read(8))
      header = json.loads(f.read(header_len))
  except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _ST_DTYPES:
      raise CheckpointError(f"{path}: tensor {name} has dtype {info['dtype']}; "
                            f"readable: {sorted(_ST_DTYPES)}")
    lo, hi = info["data_offsets"]
    out[name] = data[lo:hi].view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
  return out


def read_checkpoint_dir(path: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a HF checkpoint directory (single or sharded safetensors)."""
  path = pathlib.Path(path)
  files = sorted(path.glob("*.safetensors"))
  if not files:
    found = sorted(p.name for p in path.iterdir()) if path.is_dir() else "no such directory"
    raise CheckpointError(f"{path}: expected model.safetensors (or shards *.safetensors); "
                          f"found {found}. PyTorch .bin checkpoints are not read: convert "
                          "them with safetensors first.")
  out = {}
  for f in files:
    out.update(read_safetensors(f))
  return out


def read_config(path: pathlib.Path) -> dict:
  cfg_path = pathlib.Path(path) / "config.json"
  if not cfg_path.exists():
    raise CheckpointError(f"{path}: expected config.json, not found")
  return json.loads(cfg_path.read_text())


class _Taker:
  """Pops tensors by name, checking shapes, and reports what is left over."""

  def __init__(self, weights: Mapping[str, np.ndarray], dtype, source: str):
    # ``weights`` may be lazy (GGUF dequantizes on access): read each once, never copy.
    self.weights, self.dtype, self.source = weights, dtype, source
    self.remaining = set(weights.keys())

  def __call__(self, name: str, shape: tuple[int, ...], transpose: bool = False):
    if name not in self.remaining:
      near = sorted(k for k in self.remaining if k.split(".")[-1] == name.split(".")[-1])[:5]
      raise CheckpointError(f"{self.source}: expected tensor {name!r} {shape}, not found "
                            f"(similar names found: {near or 'none'})")
    self.remaining.discard(name)
    w = np.asarray(self.weights[name])
    w = w.T if transpose else w
    if tuple(w.shape) != tuple(shape):
      raise CheckpointError(f"{self.source}: tensor {name!r} has shape {tuple(w.shape)}, "
                            f"expected {tuple(shape)} from config")
    return jnp.asarray(w.astype(np.dtype(self.dtype)))

  def leftover(self, ignore: Callable[[str], bool] = lambda k: False) -> list[str]:
    return sorted(k for k in self.remaining if not ignore(k))


def _strip_prefix(weights: Mapping[str, np.ndarray], prefixes) -> dict[str, np.ndarray]:
  out = {}
  for k, v in weights.items():
    for p in prefixes:
      if k.startswith(p):
        k = k[len(p):]
        break
    out[k] = v
  return out


def bert_params_from_hf(weights: Mapping[str, np.ndarray], config, source: str = "checkpoint"):
  """HF ``BertModel`` tensors -> ``BertEncoder`` params (Dense kernels transposed)."""
  take = _Taker(_strip_prefix(weights, ("bert.",)), config.dtype, source)
  h, f = config.hidden_size, config.intermediate_size
  ln = lambda p: {"scale": take(f"{p}.weight", (h,)), "bias": take(f"{p}.bias", (h,))}
  dense = lambda p, i, o: {"kernel": take(f"{p}.weight", (i, o), transpose=True),
                           "bias": take(f"{p}.bias", (o,))}
  params = {"embeddings": {
      "word_embeddings": {"embedding": take("embeddings.word_embeddings.weight",
                                            (config.vocab_size, h))},
      "position_embeddings": {"embedding": take("embeddings.position_embeddings.weight",
                                                (config.max_position_embeddings, h))},
      "token_type_embeddings": {"embedding": take("embeddings.token_type_embeddings.weight",
                                                  (config.type_vocab_size, h))},
      "layer_norm": ln("embeddings.LayerNorm")}}
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}"
    params[f"layer_{i}"] = {
        "query": dense(f"{p}.attention.self.query", h, h),
        "key": dense(f"{p}.attention.self.key", h, h),
        "value": dense(f"{p}.attention.self.value", h, h),
        "attention_out": dense(f"{p}.attention.output.dense", h, h),
        "attention_norm": ln(f"{p}.attention.output.LayerNorm"),
        "intermediate": dense(f"{p}.intermediate.dense", h, f),
        "output": dense(f"{p}.output.dense", f, h),
        "output_norm": ln(f"{p}.output.LayerNorm"),
    }
  left = take.leftover(lambda k: k.startswith(("pooler.", "cls.")) or k.endswith("position_ids"))
  if left:
    raise CheckpointError(f"{source}: unexpected tensors for a {config.num_layers}-layer BERT: "
                          f"{left[:8]}{' ...' if len(left) > 8 else ''}")
  return {"params": params}


def llama_params_from_hf(weights: Mapping[str, np.ndarray], config, source: str = "checkpoint"):
  """HF ``LlamaForCausalLM`` / Qwen2 tensors -> ``LlamaDecoder`` params."""
  take = _Taker(weights, config.dtype, source)
  h, f, d = config.hidden_size, config.intermediate_size, config.head_dim
  nq, nkv = config.num_heads * d, config.num_kv_heads * d

  def dense(p, i, o, bias=False):
    out = {"kernel": take(f"{p}.weight", (i, o), transpose=True)}
    if bias:
      out["bias"] = take(f"{p}.bias", (o,))
    return out

  params = {"embed_tokens": {"embedding": take("model.embed_tokens.weight",
                                               (config.vocab_size, h))}}
  for i in range(config.num_layers):
    p = f"model.layers.{i}"
    b = config.attention_bias
    params[f"layer_{i}"] = {
        "input_norm": {"scale": take(f"{p}.input_layernorm.weight", (h,))},
        "q_proj": dense(f"{p}.self_attn.q_proj", h, nq, b),
        "k_proj": dense(f"{p}.self_attn.k_proj", h, nkv, b),
        "v_proj": dense(f"{p}.self_attn.v_proj", h, nkv, b),
        "o_proj": dense(f"{p}.self_attn.o_proj", nq, h),
        "post_attention_norm": {"scale": take(f"{p}.post_attention_layernorm.weight", (h,))},
        "gate_proj": dense(f"{p}.mlp.gate_proj", h, f),
        "up_proj": dense(f"{p}.mlp.up_proj", h, f),
        "down_proj": dense(f"{p}.mlp.down_proj", f, h),
    }
  params["norm"] = {"scale": take("model.norm.weight", (h,))}
  if not config.tie_embeddings:
    params["lm_head"] = {"kernel": take("lm_head.weight", (h, config.vocab_size),
                                        transpose=True)}
  else:
    take.remaining.discard("lm_head.weight")   # some tied checkpoints still store a copy
  left = take.leftover(lambda k: "rotary_emb" in k)
  if left:
    raise CheckpointError(f"{source}: unexpected tensors for this config "
                          f"(attention_bias={config.attention_bias}, tie_embeddings="
                          f"{config.tie_embeddings}): {left[:8]}{' ...' if len(left) > 8 else ''}")
  return {"params": params}
