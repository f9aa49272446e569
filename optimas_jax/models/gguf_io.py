"""GGUF checkpoints (llama.cpp format): config, dequantized weights, tokenizer.

Tensors are dequantized with ``gguf.quants.dequantize`` one at a time, when
the converter asks for them, and cast to the target dtype at once, so a
float32 copy of the whole model never exists.

llama.cpp's converter permutes the rows of Q and K of "llama" models so that
its RoPE rotates adjacent pairs (x0, x1), (x2, x3), ...; HF (and
models/llama.py) rotate the two halves of each head. ``unpermute_qk``
restores the HF row order.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping

import gguf
import numpy as np

from optimas_jax.models import converted, llama, tokenizer as tok_lib, weights

SUPPORTED_ARCHS = ("llama", "qwen2")


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's ``permute``: rows (heads, D/2, 2) -> (heads, 2, D/2)."""
  rows = w.shape[0]
  return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf(path: pathlib.Path) -> gguf.GGUFReader:
  """Parsed GGUF file (memory-mapped). Not cached: the reader holds ~200 MB of
  per-token views, so it is dropped as soon as weights and tokenizer are out."""
  path = pathlib.Path(path)
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # gguf raises ValueError/OSError/struct errors alike
    raise weights.CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e


def read_metadata(reader: gguf.GGUFReader) -> dict:
  """All key/value fields as plain python values (strings, numbers, lists)."""
  return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


# GGUF tensor name -> HF name (layer index substituted).
_NAMES = [
    (r"token_embd\.weight", "model.embed_tokens.weight"),
    (r"output_norm\.weight", "model.norm.weight"),
    (r"output\.weight", "lm_head.weight"),
    (r"blk\.(\d+)\.attn_norm\.weight", "model.layers.{}.input_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_norm\.weight", "model.layers.{}.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.attn_q\.(weight|bias)", "model.layers.{}.self_attn.q_proj.{}"),
    (r"blk\.(\d+)\.attn_k\.(weight|bias)", "model.layers.{}.self_attn.k_proj.{}"),
    (r"blk\.(\d+)\.attn_v\.(weight|bias)", "model.layers.{}.self_attn.v_proj.{}"),
    (r"blk\.(\d+)\.attn_output\.weight", "model.layers.{}.self_attn.o_proj.weight"),
    (r"blk\.(\d+)\.ffn_gate\.weight", "model.layers.{}.mlp.gate_proj.weight"),
    (r"blk\.(\d+)\.ffn_up\.weight", "model.layers.{}.mlp.up_proj.weight"),
    (r"blk\.(\d+)\.ffn_down\.weight", "model.layers.{}.mlp.down_proj.weight"),
]


def _hf_name(name: str) -> str | None:
  for pattern, target in _NAMES:
    m = re.fullmatch(pattern, name)
    if m:
      return target.format(*m.groups())
  return None


class _LazyTensors(Mapping):
  """HF name -> dequantized float32 array, computed on access."""

  def __init__(self, reader: gguf.GGUFReader, arch: str, config: llama.LlamaConfig, source: str):
    self._tensors, self._arch, self._config = {}, arch, config
    unknown = []
    for t in reader.tensors:
      hf = _hf_name(t.name)
      if hf is None:
        unknown.append(t.name)
      else:
        self._tensors[hf] = t
    if unknown:
      raise weights.CheckpointError(f"{source}: unexpected GGUF tensors for a {arch} model: "
                                    f"{unknown[:8]}")

  def __getitem__(self, name):
    t = self._tensors[name]
    try:
      w = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
      raise weights.CheckpointError(f"tensor {t.name}: quantization {t.tensor_type.name} "
                                    "cannot be dequantized by the gguf package") from e
    w = np.asarray(w, np.float32)
    # GGUF lists dims fastest-first; numpy order is the reverse (= torch layout).
    w = w.reshape(tuple(int(n) for n in reversed(t.shape)))
    if self._arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
      w = unpermute_qk(w, self._config.num_heads)
    elif self._arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
      w = unpermute_qk(w, self._config.num_kv_heads)
    return w

  def __iter__(self):
    return iter(self._tensors)

  def __len__(self):
    return len(self._tensors)


def config_from_metadata(meta: dict, tensor_names, dtype, source: str) -> llama.LlamaConfig:
  arch = meta.get("general.architecture")
  if arch not in SUPPORTED_ARCHS:
    raise weights.CheckpointError(f"{source}: general.architecture={arch!r}; "
                                  f"supported: {SUPPORTED_ARCHS}")

  def get(key, default=None):
    full = f"{arch}.{key}"
    if full not in meta and default is None:
      raise weights.CheckpointError(f"{source}: expected metadata field {full!r}, not found")
    return meta.get(full, default)

  hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
  vocab = get("vocab_size", 0) or len(meta.get("tokenizer.ggml.tokens", []))
  return llama.LlamaConfig(
      vocab_size=int(vocab), hidden_size=hidden, num_layers=int(get("block_count")),
      num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)),
      head_dim=int(get("rope.dimension_count", hidden // heads)),
      intermediate_size=int(get("feed_forward_length")),
      rope_theta=float(get("rope.freq_base", 10000.0)),
      rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
      tie_embeddings="output.weight" not in tensor_names,
      attention_bias="blk.0.attn_q.bias" in tensor_names,
      max_position_embeddings=int(get("context_length", 2048)), dtype=dtype)


def load_gguf(path: pathlib.Path, dtype):
  """GGUF file -> (LlamaConfig, params, TextTokenizer), converted once per machine
  (models/converted.py)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise weights.CheckpointError(f"{path}: GGUF file not found")
  config, params, tokenizer = converted.load_or_convert(path, dtype,
                                                        lambda: _convert(path, dtype))
  _TOKENIZERS[path] = tokenizer
  return config, params, tokenizer


def _convert(path: pathlib.Path, dtype):
  reader = open_gguf(path)
  meta = read_metadata(reader)
  names = {t.name for t in reader.tensors}
  config = config_from_metadata(meta, names, dtype, str(path))
  tensors = _LazyTensors(reader, meta["general.architecture"], config, str(path))
  params = weights.llama_params_from_hf(tensors, config, str(path))
  return config, params, tok_lib.from_gguf_metadata(meta)


_TOKENIZERS: dict[pathlib.Path, tok_lib.TextTokenizer] = {}


def load_gguf_tokenizer(path: pathlib.Path) -> tok_lib.TextTokenizer:
  """Only the tokenizer of a GGUF file (cached; reads metadata, no tensor data)."""
  path = pathlib.Path(path)
  if path not in _TOKENIZERS:
    tokenizer = converted.kept_tokenizer(path)
    if tokenizer is None:
      tokenizer = tok_lib.from_gguf_metadata(read_metadata(open_gguf(path)))
    _TOKENIZERS[path] = tokenizer
  return _TOKENIZERS[path]
