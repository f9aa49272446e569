"""BERT-family encoder (Flax Linen), sized for all-MiniLM-L6-v2.

Layers are separate submodules ``layer_0 .. layer_{n-1}`` (not ``nn.scan``)
so that callers can freeze the lower layers by parameter path and run them
once with ``run_layers(hidden, mask, 0, k)``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from optimas_jax.models import xla_cpu
from optimas_jax.models.attention import attention
from optimas_jax.models.matmul import dense_dot_general


@flax.struct.dataclass(frozen=True)
class BertConfig:
  """Hyperparameters of a BERT encoder (HF ``config.json`` names in comments)."""

  vocab_size: int = flax.struct.field(pytree_node=False)
  hidden_size: int = flax.struct.field(pytree_node=False)
  num_layers: int = flax.struct.field(pytree_node=False)          # num_hidden_layers
  num_heads: int = flax.struct.field(pytree_node=False)           # num_attention_heads
  intermediate_size: int = flax.struct.field(pytree_node=False)
  max_position_embeddings: int = flax.struct.field(pytree_node=False)
  type_vocab_size: int = flax.struct.field(pytree_node=False)
  layer_norm_eps: float = flax.struct.field(pytree_node=False)
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)
  # The parameters' dtype (None: `dtype`). float32 parameters with a bfloat16
  # `dtype` is mixed precision: bfloat16 products, float32 weights and updates.
  param_dtype: Any = flax.struct.field(pytree_node=False, default=None)

  @property
  def weights_dtype(self):
    return self.dtype if self.param_dtype is None else self.param_dtype

  @classmethod
  def tiny(cls, dtype=jnp.float32) -> "BertConfig":
    """A small random-init config for tests."""
    return cls(vocab_size=512, hidden_size=32, num_layers=2, num_heads=2,
               intermediate_size=64, max_position_embeddings=128,
               type_vocab_size=2, layer_norm_eps=1e-12, dtype=dtype)

  @classmethod
  def from_hf(cls, cfg: dict, dtype=jnp.float32) -> "BertConfig":
    """Builds the config from a HF ``config.json`` dict."""
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
      raise ValueError(f"config.json hidden_act={act!r}; only 'gelu' (erf) is implemented")
    return cls(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
               num_layers=cfg["num_hidden_layers"],
               num_heads=cfg["num_attention_heads"],
               intermediate_size=cfg["intermediate_size"],
               max_position_embeddings=cfg["max_position_embeddings"],
               type_vocab_size=cfg.get("type_vocab_size", 2),
               layer_norm_eps=cfg.get("layer_norm_eps", 1e-12), dtype=dtype)


def _dense(features: int, config: BertConfig, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=config.dtype, param_dtype=config.weights_dtype, name=name,
                  dot_general=dense_dot_general)


def gelu(x):
  """Exact (erf) GELU, as BERT was trained with. Written with erf rather than
  jax.nn.gelu's erfc: XLA:CPU evaluates erfc piecewise, and MiniLM's MLP forward
  + backward at 2048 tokens takes 20 ms longer with it; the values agree to float32
  rounding."""
  return x * 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=config.dtype,
                      param_dtype=config.weights_dtype, name=name)


class BertEmbeddings(nn.Module):
  """Word + absolute position + token type embeddings, then LayerNorm."""

  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids=None):
    cfg = self.config
    _, length = input_ids.shape
    if length > cfg.max_position_embeddings:
      raise ValueError(f"sequence length {length} > max_position_embeddings="
                       f"{cfg.max_position_embeddings}; truncate the input")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    embed = lambda n, name: nn.Embed(n, cfg.hidden_size, dtype=cfg.dtype,
                                     param_dtype=cfg.weights_dtype, name=name)
    x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
    x = x + embed(cfg.max_position_embeddings, "position_embeddings")(
        jnp.arange(length)[None, :])
    x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
    return _layer_norm(cfg, "layer_norm")(x)


class BertLayer(nn.Module):
  """Post-norm transformer layer: self-attention, then GELU MLP."""

  config: BertConfig

  @nn.compact
  def __call__(self, x, attention_mask):
    cfg = self.config
    batch, length, hidden = x.shape
    head_dim = hidden // cfg.num_heads
    split = lambda t: t.reshape(batch, length, cfg.num_heads, head_dim)
    q = split(_dense(hidden, cfg, "query")(x))
    k = split(_dense(hidden, cfg, "key")(x))
    v = split(_dense(hidden, cfg, "value")(x))
    # Softmax in float32: bf16 logits lose the small differences between keys.
    attn = attention(q, k, v, attention_mask).reshape(batch, length, hidden)
    x = _layer_norm(cfg, "attention_norm")(x + _dense(hidden, cfg, "attention_out")(attn))
    h = gelu(_dense(cfg.intermediate_size, cfg, "intermediate")(x))
    return _layer_norm(cfg, "output_norm")(x + _dense(hidden, cfg, "output")(h))


class BertEncoder(nn.Module):
  """BERT encoder returning the last hidden state (B, L, H)."""

  config: BertConfig

  def setup(self):
    self.embeddings = BertEmbeddings(self.config)
    # setattr keeps the parameter paths "layer_{i}" (a list would give "layers_{i}").
    for i in range(self.config.num_layers):
      setattr(self, f"layer_{i}", BertLayer(self.config))

  def embed(self, input_ids, token_type_ids=None):
    """Token ids (B, L) -> embedded input to layer 0 (B, L, H)."""
    return self.embeddings(input_ids, token_type_ids)

  def run_layers(self, hidden, attention_mask, start: int, stop: int):
    """Runs layers ``start .. stop-1`` (python ints) on ``hidden`` (B, L, H)."""
    if not 0 <= start <= stop <= self.config.num_layers:
      raise ValueError(f"layer range [{start}, {stop}) outside [0, {self.config.num_layers}]")
    for i in range(start, stop):
      hidden = getattr(self, f"layer_{i}")(hidden, attention_mask)
    return hidden

  def __call__(self, input_ids, attention_mask, token_type_ids=None):
    hidden = self.embed(input_ids, token_type_ids)
    return self.run_layers(hidden, attention_mask, 0, self.config.num_layers)


def mean_pool(hidden, mask):
  """Mean of ``hidden`` (B, L, H) over tokens where ``mask`` (B, L) is 1, in float32."""
  m = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
  return total / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def l2_normalize(x, eps: float = 1e-12):
  """Rows of ``x`` scaled to unit L2 norm (as torch.nn.functional.normalize)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def sentence_embeddings(module: BertEncoder, params, input_ids, attention_mask):
  """Mean-pooled, L2-normalised sentence embeddings (B, H) in float32."""
  hidden = module.apply(params, input_ids, attention_mask)
  return l2_normalize(mean_pool(hidden, attention_mask))


@functools.cache
def _jit_sentence_embeddings(dtype):
  return jax.jit(sentence_embeddings, static_argnums=0,
                 compiler_options=xla_cpu.encoder_options(dtype))


def encode_sentences(module: BertEncoder, params, tokenizer, texts, batch_size: int = 64,
                     max_length: int | None = None):
  """Normalised embeddings (N, H) of ``texts`` as a numpy array.

  ``tokenizer`` is a ``TextTokenizer``; batches are padded to a multiple of
  16 tokens so that varied lengths reuse a few compiled shapes.
  """
  import numpy as np  # local: keeps the module's top-level imports jax-only

  out = []
  for lo in range(0, len(texts), batch_size):
    ids, mask = tokenizer.pad_batch(texts[lo:lo + batch_size], max_length=max_length,
                                    multiple_of=16)
    embed = _jit_sentence_embeddings(jnp.dtype(module.config.dtype).name)
    out.append(np.asarray(embed(module, params, ids, mask)))
  if not out:
    return np.zeros((0, module.config.hidden_size), np.float32)
  return np.concatenate(out, axis=0)
