"""Named backbones: ``load_backbone(name) -> Backbone`` (module, params, tokenizer).

Names: "minilm" (all-MiniLM-L6-v2), "smollm2-135m" (SmolLM2-135M-Instruct,
GGUF), "tiny-bert" / "tiny-llama" (random init, fixed seed, for tests) and
"hf:<dir>" (a HF checkpoint directory: BERT, Llama, Qwen2, SmolLM).
Loaded backbones are cached per (name, dtype): weights are read once.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from optimas_jax.core.registry import lookup
from optimas_jax.models import bert, packages, tokenizer as tok_lib, weights

TINY_SEED = 0
# Max tokens per sequence for the encoder tokenizer: sentence-transformers'
# max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json).
MINILM_MAX_LENGTH = 256


@dataclasses.dataclass(frozen=True, eq=False)
class Backbone:
  """A loaded model: Flax module + params + tokenizer + what callers need to know."""

  module: nn.Module
  params: Any
  tokenizer: tok_lib.TextTokenizer
  kind: Literal["encoder", "decoder"]
  hidden_size: int
  num_layers: int
  pad_id: int
  name: str = ""


def _bert_backbone(name, config, params, tokenizer) -> Backbone:
  return Backbone(bert.BertEncoder(config), params, tokenizer, "encoder",
                  config.hidden_size, config.num_layers, tokenizer.pad_id, name)


def _llama_backbone(name, config, params, tokenizer) -> Backbone:
  from optimas_jax.models import llama
  return Backbone(llama.LlamaDecoder(config), params, tokenizer, "decoder",
                  config.hidden_size, config.num_layers, tokenizer.pad_id, name)


def _load_minilm(dtype) -> Backbone:
  return _load_hf_dir(packages.minilm_dir(), dtype, name="minilm")


def _load_hf_dir(path: pathlib.Path, dtype, name: str) -> Backbone:
  path = pathlib.Path(path).expanduser()
  if not path.is_dir():
    raise weights.CheckpointError(f"hf:{path}: expected a directory with config.json and "
                                  "*.safetensors, not found")
  cfg = weights.read_config(path)
  model_type = cfg.get("model_type")
  tok_path = path / "tokenizer.json"
  if not tok_path.exists():
    raise weights.CheckpointError(f"{path}: expected tokenizer.json, not found")
  tensors = weights.read_checkpoint_dir(path)
  if model_type == "bert":
    config = bert.BertConfig.from_hf(cfg, dtype)
    max_len = min(MINILM_MAX_LENGTH, config.max_position_embeddings)
    tokenizer = tok_lib.from_tokenizer_json(tok_path, max_length=max_len)
    return _bert_backbone(name, config, weights.bert_params_from_hf(tensors, config, str(path)),
                          tokenizer)
  if model_type in ("llama", "qwen2", "mistral"):
    from optimas_jax.models import llama
    config = llama.LlamaConfig.from_hf(cfg, dtype)
    tokenizer = tok_lib.from_tokenizer_json(tok_path)
    params = weights.llama_params_from_hf(tensors, config, str(path))
    return _llama_backbone(name, config, params, tokenizer)
  raise weights.CheckpointError(f"{path}/config.json: model_type={model_type!r}; "
                                "supported: bert, llama, qwen2, mistral")


def _load_smollm2(dtype) -> Backbone:
  from optimas_jax.models import gguf_io
  config, params, tokenizer = gguf_io.load_gguf(packages.smollm2_gguf(), dtype)
  return _llama_backbone("smollm2-135m", config, params, tokenizer)


def _load_tiny_bert(dtype) -> Backbone:
  """Random BertConfig.tiny() with the MiniLM tokenizer, ids clipped to the tiny vocab."""
  config = bert.BertConfig.tiny(dtype)
  tokenizer = tok_lib.from_tokenizer_json(packages.minilm_dir() / "tokenizer.json",
                                          max_length=config.max_position_embeddings)
  tokenizer = dataclasses.replace(tokenizer, max_id=config.vocab_size - 1)
  module = bert.BertEncoder(config)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = module.init(jax.random.PRNGKey(TINY_SEED), ids, jnp.ones_like(ids))
  return _bert_backbone("tiny-bert", config, params, tokenizer)


def _load_tiny_llama(dtype) -> Backbone:
  """Random LlamaConfig.tiny() with the SmolLM2 tokenizer, ids clipped to the tiny vocab."""
  from optimas_jax.models import gguf_io, llama
  config = llama.LlamaConfig.tiny(dtype)
  tokenizer = gguf_io.load_gguf_tokenizer(packages.smollm2_gguf())
  tokenizer = dataclasses.replace(tokenizer, max_id=config.vocab_size - 1)
  module = llama.LlamaDecoder(config)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = module.init(jax.random.PRNGKey(TINY_SEED), ids, jnp.ones_like(ids))
  return _llama_backbone("tiny-llama", config, params, tokenizer)


BACKBONES = {
    "minilm": _load_minilm,
    "smollm2-135m": _load_smollm2,
    "tiny-bert": _load_tiny_bert,
    "tiny-llama": _load_tiny_llama,
}


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, dtype_name: str) -> Backbone:
  dtype = jnp.dtype(dtype_name)
  if name.startswith("hf:"):
    return _load_hf_dir(pathlib.Path(name[3:]), dtype, name)
  return BACKBONES[name](dtype)


def with_compute_dtype(backbone: Backbone, dtype) -> Backbone:
  """`backbone` computing in `dtype` over its parameters as they are (the same arrays).

  float32 parameters with a bfloat16 `dtype` is mixed precision: the Dense products
  take bfloat16 operands and sum in float32 (models/matmul.py), softmax and norms stay
  float32, and gradients reach the float32 parameters through the casts, so the
  optimizer's weights and moments keep float32 precision.
  """
  config = backbone.module.config
  if jnp.dtype(dtype) == jnp.dtype(config.dtype):
    return backbone
  config = dataclasses.replace(config, dtype=jnp.dtype(dtype),
                               param_dtype=config.weights_dtype)
  return dataclasses.replace(backbone, module=type(backbone.module)(config))


def load_backbone(name: str, dtype=jnp.float32) -> Backbone:
  """Loads (once per name and dtype) a named backbone; see the module docstring."""
  if not name.startswith("hf:"):
    lookup(BACKBONES, name, "backbone (or 'hf:<dir>')")
  return _load_cached(name, jnp.dtype(dtype).name)
