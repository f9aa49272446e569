"""Llama-architecture decoder (Flax Linen): RoPE, GQA, RMSNorm, SwiGLU.

Covers Llama, SmolLM and Qwen2 (``attention_bias=True``). Layers are
separate submodules ``layer_0 .. layer_{n-1}`` like the BERT encoder, so the
reward code can freeze and cache the lower ones. ``forward_cached`` is the
entry point for generation (models/generate.py): it reads and writes a
preallocated KV cache at a given slot.

RoPE uses the HF layout (rotate the two halves of each head), so weights
from llama.cpp GGUF files must be un-permuted first (models/gguf_io.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from optimas_jax.models import gqa
from optimas_jax.models.matmul import dense_dot_general

_static = lambda **kw: flax.struct.field(pytree_node=False, **kw)


@flax.struct.dataclass(frozen=True)
class LlamaConfig:
  """Hyperparameters of a Llama-family decoder."""

  vocab_size: int = _static()
  hidden_size: int = _static()
  num_layers: int = _static()
  num_heads: int = _static()
  num_kv_heads: int = _static()
  head_dim: int = _static()
  intermediate_size: int = _static()
  rope_theta: float = _static(default=10000.0)
  rms_norm_eps: float = _static(default=1e-5)
  tie_embeddings: bool = _static(default=True)
  attention_bias: bool = _static(default=False)
  max_position_embeddings: int = _static(default=2048)
  dtype: Any = _static(default=jnp.float32)
  # The parameters' dtype (None: `dtype`). float32 parameters with a bfloat16
  # `dtype` is mixed precision: bfloat16 products, float32 weights and updates.
  param_dtype: Any = _static(default=None)

  @property
  def weights_dtype(self):
    return self.dtype if self.param_dtype is None else self.param_dtype

  @classmethod
  def tiny(cls, dtype=jnp.float32) -> "LlamaConfig":
    """A small random-init config for tests (GQA: 4 query heads, 2 kv heads)."""
    return cls(vocab_size=512, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
               head_dim=8, intermediate_size=64, rope_theta=10000.0, rms_norm_eps=1e-5,
               tie_embeddings=True, attention_bias=False, max_position_embeddings=256,
               dtype=dtype)

  @classmethod
  def from_hf(cls, cfg: dict, dtype=jnp.float32) -> "LlamaConfig":
    """From a HF ``config.json`` dict (Llama, Qwen2, Mistral, SmolLM)."""
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
      raise ValueError(f"config.json hidden_act={act!r}; only 'silu' (SwiGLU) is implemented")
    scaling = cfg.get("rope_scaling") or (cfg.get("rope_parameters") or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ("default", None):
      raise ValueError(f"config.json rope scaling type {kind!r} is not implemented; "
                       "only plain RoPE")
    theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    heads = cfg["num_attention_heads"]
    return cls(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
               num_layers=cfg["num_hidden_layers"], num_heads=heads,
               num_kv_heads=cfg.get("num_key_value_heads", heads),
               head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
               intermediate_size=cfg["intermediate_size"], rope_theta=float(theta),
               rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
               tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
               attention_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
               max_position_embeddings=cfg.get("max_position_embeddings", 2048), dtype=dtype)


class RMSNorm(nn.Module):
  """RMSNorm computed in float32 (bf16 squares lose precision), cast back."""

  eps: float
  dtype: Any
  param_dtype: Any = None

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],),
                       self.param_dtype or self.dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * scale.astype(jnp.float32)).astype(self.dtype)


def apply_rope(x, positions, theta: float):
  """Rotary embedding, HF layout: x (B, L, heads, D), positions (B, L) int."""
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq          # (B, L, D/2)
  cos = jnp.concatenate([jnp.cos(angles)] * 2, -1)[:, :, None, :]
  sin = jnp.concatenate([jnp.sin(angles)] * 2, -1)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., d // 2:], x32[..., :d // 2]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


def positions_from_mask(attention_mask):
  """Token positions that skip left padding: 0 at each row's first real token."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def causal_mask(attention_mask):
  """(B, L, L) bool: query i sees real key j <= i."""
  length = attention_mask.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  return causal[None] & attention_mask.astype(bool)[:, None, :]


def _write(cache, k, v, cache_index):
  """This call's keys and values, (B, L, kv_heads, D), written into ``cache`` at slot
  ``cache_index`` (a scalar), or at row b's own slot ``cache_index[b]`` ((B,))."""
  ck, cv = cache
  k, v = k.astype(ck.dtype), v.astype(cv.dtype)
  if jnp.ndim(cache_index) == 0:
    at = lambda axis: tuple(cache_index if a == axis else 0 for a in range(4))
    key_axis, value_axis = slot_axes(ck.dtype)
    return (_update(ck, _keys_major(k), at(key_axis)),
            _update(cv, _heads_major(v), at(value_axis)))
  rows = jnp.arange(k.shape[0])[:, None]
  cols = cache_index[:, None] + jnp.arange(k.shape[1])[None, :]
  # Indices split by slices: the indexed axes come first, (B, L, kv_heads, D).
  at_k = ck.at[rows, :, :, cols] if gqa.keys_slot_last(ck.dtype) else ck.at[rows, :, cols]
  return at_k.set(k), cv.at[rows, :, cols].set(v)


def _update(cache, update, start):
  """dynamic_update_slice of a cache, in place. A bfloat16 one is written as its
  bits: XLA:CPU ran a bfloat16 update (whose new values came from float32) in
  float32, converting the whole cache and back every decode step."""
  if jnp.dtype(cache.dtype).itemsize != 2:
    return jax.lax.dynamic_update_slice(cache, update, start)
  bits = lambda x: jax.lax.bitcast_convert_type(x, jnp.uint16)
  # The barrier keeps the update the root of its fusion (in place).
  new = jax.lax.optimization_barrier(jax.lax.dynamic_update_slice(bits(cache), bits(update),
                                                                   start))
  return jax.lax.bitcast_convert_type(new, cache.dtype)


def _heads_major(x):
  """(B, L, heads, D) -> (B, heads, L, D)."""
  return jnp.transpose(x, (0, 2, 1, 3))


def _keys_major(k):
  """Keys (B, L, heads, D) in the cache's layout for their dtype (gqa.keys_slot_last)."""
  return jnp.transpose(k, (0, 2, 3, 1) if gqa.keys_slot_last(k.dtype) else (0, 2, 1, 3))


def slot_axes(dtype):
  """The slot axes of a cached (keys, values) pair of ``dtype``."""
  return gqa.key_slot_axis(dtype), 2


def cache_slots(kv, stop: int, rows: int | None = None):
  """A cached (keys, values) pair's first ``stop`` slots (and first ``rows`` rows)."""
  return tuple(jax.lax.slice_in_dim(jax.lax.slice_in_dim(c, 0, stop, axis=axis), 0,
                                    c.shape[0] if rows is None else rows, axis=0)
               for c, axis in zip(kv, slot_axes(kv[0].dtype)))


def _first_slot(cache, cache_index):
  """The first query's slot when it is known at trace time (see gqa.attention)."""
  if cache is None:
    return 0
  return cache_index if isinstance(cache_index, int) else None


class LlamaLayer(nn.Module):
  """Pre-norm layer: GQA self-attention with RoPE, then SwiGLU MLP."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x, positions, mask, cache=None, cache_index=None):
    """x (B, L, H); positions (B, L); mask (B, L, S) bool over keys.

    Without ``cache`` the keys are this call's tokens (S = L). With ``cache``
    = (keys, values), laid out as ``init_cache`` says, this
    call's keys are written at slot ``cache_index`` (a scalar, or one slot per
    row: (B,)) and attention runs over the whole cache; returns the new cache too.
    """
    cfg = self.config
    batch, length, _ = x.shape
    d, nq, nkv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
    dense = lambda n, name, bias=False: nn.Dense(n, use_bias=bias, dtype=cfg.dtype,
                                                 param_dtype=cfg.weights_dtype, name=name,
                                                 dot_general=dense_dot_general)
    h = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.weights_dtype, name="input_norm")(x)
    q = dense(nq * d, "q_proj", cfg.attention_bias)(h).reshape(batch, length, nq, d)
    k = dense(nkv * d, "k_proj", cfg.attention_bias)(h).reshape(batch, length, nkv, d)
    v = dense(nkv * d, "v_proj", cfg.attention_bias)(h).reshape(batch, length, nkv, d)
    q = apply_rope(q, positions, cfg.rope_theta)
    k = apply_rope(k, positions, cfg.rope_theta)
    # GQA: group the query heads that share one kv head instead of repeating kv.
    q = q.reshape(batch, length, nkv, nq // nkv, d)
    new_cache = None
    if cache is None:
      attn = gqa.attention(q, _keys_major(k), _heads_major(v), mask, 0, cfg.dtype)
    elif length == 1 and batch == 1:
      # A batch-1 decode step attends to the cache as it was, without its own slot,
      # and to its own key apart: attending to the written cache, XLA:CPU duplicated
      # the write into the product's (batch-squeezed) operand and copied every
      # layer's cache each step (3 of 25 ms). With more rows it is the reverse: this
      # order makes XLA:CPU copy the caches (a step at batch 32: 125 -> 170 ms).
      own = (_keys_major(k.astype(cache[0].dtype)), _heads_major(v.astype(cache[1].dtype)))
      own_slot = jnp.arange(cache[1].shape[2]) == cache_index                # (S,)
      attn = gqa.decode_step(q, cache, own, mask & ~own_slot, cfg.dtype)
      new_cache = _write(cache, k, v, cache_index)
    else:
      new_cache = _write(cache, k, v, cache_index)
      attn = gqa.attention(q, *new_cache, mask, _first_slot(cache, cache_index), cfg.dtype)
    attn = attn.reshape(batch, length, nq * d)
    x = x + dense(cfg.hidden_size, "o_proj")(attn)
    h = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.weights_dtype, name="post_attention_norm")(x)
    h = nn.silu(dense(cfg.intermediate_size, "gate_proj")(h)) * dense(
        cfg.intermediate_size, "up_proj")(h)
    x = x + dense(cfg.hidden_size, "down_proj")(h)
    return x, new_cache


class LlamaDecoder(nn.Module):
  """Llama decoder: ``__call__`` gives logits (B, L, V)."""

  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype,
                                 param_dtype=cfg.weights_dtype)
    # setattr keeps the parameter paths "layer_{i}" (a list would give "layers_{i}").
    for i in range(cfg.num_layers):
      setattr(self, f"layer_{i}", LlamaLayer(cfg))
    self.norm = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.weights_dtype)
    if not cfg.tie_embeddings:
      self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                              param_dtype=cfg.weights_dtype)

  def embed(self, input_ids):
    """Token ids (B, L) -> input of layer 0 (B, L, H)."""
    return self.embed_tokens(input_ids)

  def run_layers(self, hidden, attention_mask, start: int, stop: int):
    """Runs layers ``start .. stop-1`` (python ints), causal, left padding allowed."""
    if not 0 <= start <= stop <= self.config.num_layers:
      raise ValueError(f"layer range [{start}, {stop}) outside [0, {self.config.num_layers}]")
    positions = positions_from_mask(attention_mask)
    mask = causal_mask(attention_mask)
    for i in range(start, stop):
      hidden, _ = getattr(self, f"layer_{i}")(hidden, positions, mask)
    return hidden

  def final_norm(self, hidden):
    return self.norm(hidden)

  def hidden_states(self, input_ids, attention_mask):
    """Final-normed hidden states (B, L, H), the reward backbone's features."""
    hidden = self.run_layers(self.embed(input_ids), attention_mask, 0, self.config.num_layers)
    return self.norm(hidden)

  def completion_states(self, prompt_ids, prompt_mask, completion_ids, completion_mask,
                        group: int = 1):
    """Final-normed hidden states (B, T, H) at the positions that predict the
    completion: the last prompt token's, then each completion token's but the last.

    Rows are [left-padded prompt (P) | right-padded completion (T)]. With
    ``group`` > 1 the rows come in runs of ``group`` consecutive rows with the
    same prompt (a GRPO group's samples): each prompt runs through the layers
    once and its keys and values serve every row of its run, which is the
    full-sequence pass's arithmetic without repeating the prompt's.
    """
    batch, plen = prompt_ids.shape
    tlen = completion_ids.shape[1]
    full_mask = jnp.concatenate([prompt_mask, completion_mask], 1).astype(jnp.int32)
    if group == 1:
      ids = jnp.concatenate([prompt_ids, completion_ids], 1)
      return self.hidden_states(ids, full_mask)[:, plen - 1:plen - 1 + tlen]
    if batch % group:
      raise ValueError(f"{batch} rows do not split into runs of group={group} rows")
    cfg = self.config
    first = lambda x: x.reshape((batch // group, group) + x.shape[1:])[:, 0]
    shared = lambda x: jnp.repeat(x, group, axis=0)
    positions, mask = positions_from_mask(full_mask), causal_mask(full_mask)
    prompt_pos, prompt_keys = first(positions[:, :plen]), first(mask[:, :plen, :plen])
    xp, xc = self.embed(first(prompt_ids)), self.embed(completion_ids)
    for i in range(cfg.num_layers):
      layer = getattr(self, f"layer_{i}")
      empty = empty_kv(cfg, batch // group, plen)
      xp, prompt_cache = layer(xp, prompt_pos, prompt_keys, empty, 0)
      room = empty_kv(cfg, batch, tlen)
      cache = tuple(jnp.concatenate([shared(c), r], axis)
                    for c, r, axis in zip(prompt_cache, room, slot_axes(room[0].dtype)))
      xc, _ = layer(xc, positions[:, plen:], mask[:, plen:], cache, plen)
    return self.norm(jnp.concatenate([shared(xp[:, -1:]), xc[:, :tlen - 1]], 1))

  def project(self, hidden):
    """Final-normed hidden (..., H) -> logits (..., V) in float32."""
    if self.config.tie_embeddings:
      # hidden x table^T as one product contracting H of both: Embed.attend's
      # table.T made XLA:CPU copy the transposed table inside a batch-1 decode step
      # (SmolLM2's 49,152 x 576 head: 4.6 -> 3.6 ms, probe).
      table = self.embed_tokens.embedding.astype(self.config.dtype)
      return jax.lax.dot_general(hidden.astype(self.config.dtype), table,
                                 (((hidden.ndim - 1,), (1,)), ((), ())),
                                 preferred_element_type=jnp.float32)
    return self.lm_head(hidden).astype(jnp.float32)

  def __call__(self, input_ids, attention_mask):
    return self.project(self.hidden_states(input_ids, attention_mask))

  def forward_cached(self, input_ids, positions, mask, cache, cache_index):
    """Generation step: ids (B, L) at ``positions``, written at cache slot ``cache_index``.

    ``mask`` (B, L, S) says which cache slots each query sees; ``cache`` is a
    tuple of per-layer (k, v). Returns (final-normed hidden (B, L, H), cache).
    """
    hidden = self.embed(input_ids)
    new_cache = []
    for i in range(self.config.num_layers):
      hidden, layer_cache = getattr(self, f"layer_{i}")(hidden, positions, mask,
                                                        cache[i], cache_index)
      new_cache.append(layer_cache)
    return self.norm(hidden), tuple(new_cache)


def init_cache(config: LlamaConfig, batch: int, length: int, dtype=None):
  """Zero KV cache: per layer (keys, values), heads-major: values (B, kv_heads, S,
  head_dim); float32 keys (B, kv_heads, head_dim, S), 2-byte keys like the values
  (gqa.keys_slot_last).

  Heads-major, so that attention's products batch over (row, kv head) and read the
  cache as it lies: the prefill's blocks and a decode step's two products a layer.
  A (B, S, kv_heads, D) cache needed a transposed copy of it (73 ms of a 113 ms
  float32 step at batch 32, probe) or a multiply-and-sum that, in bfloat16,
  converted the cache to float32. Float32 keys put the slots last so that the
  scores' product has both operands row-major: the 30 layers' decode attention at
  batch 32, 320 slots: 45 -> 31 ms (probe).
  """
  return tuple(empty_kv(config, batch, length, dtype) for _ in range(config.num_layers))


def empty_kv(config: LlamaConfig, batch: int, length: int, dtype=None):
  """One layer's zero (keys, values), laid out as ``init_cache`` says."""
  dtype = dtype or config.dtype
  heads, d = config.num_kv_heads, config.head_dim
  keys = (batch, heads, d, length) if gqa.keys_slot_last(dtype) else (batch, heads, length, d)
  return jnp.zeros(keys, dtype), jnp.zeros((batch, heads, length, d), dtype)
