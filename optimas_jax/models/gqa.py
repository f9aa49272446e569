"""The decoder's grouped-query attention, causal prompts a block of queries at a time.

A causal query sees no key after its own slot, so when a call's queries sit at
consecutive slots from a known first slot, a block of queries needs only the
keys up to its last query: the blocks skip the hidden upper triangle that one
(L, S) product would compute and then mask. On XLA:CPU this is the prefill's
attention: SmolLM2's 9 query / 3 key-value heads, 32 rows of 256-token prompts
in a 320-slot cache took 210-240 ms a layer as one masked product and 70-85 ms
in 64-query blocks (float32, 2 cores; the saving exceeds the half of the FLOPs
because each block's scores stay small). Inside a block the heads come first
and a key-value head's query group is folded into the query axis, so each
batched product is (group * block) x D x keys.

Keys and values are heads-major, the KV cache's own layout (models/llama.init_cache),
so every product batches over (row, kv head) without a copy of the cache: values
(B, KV, S, D); float32 keys (B, KV, D, S), so that the scores too are a product
of row-major operands, (q, D) x (D, S); 2-byte keys (B, KV, S, D) (`keys_slot_last`).
A decode step (one query a row) is two such products per layer.

Queries with no visible key (left padding) get a uniform softmax over the keys
their block reads, where one product gives it over the whole cache: the two
differ only at such padding positions, whose outputs no real token reads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Queries per block, and at most this many blocks (longer prompts get wider
# blocks): 64 was as fast as 32 or faster, and faster than 128, at 256 and 1024
# tokens (probes), and every block adds its own products to the compiled
# program (compile time).
QUERY_BLOCK = 64
MAX_BLOCKS = 8


def keys_slot_last(dtype) -> bool:
  """Keys of ``dtype`` stored (B, KV, D, S) (True) or (B, KV, S, D).

  Float32: slots last, so the scores read the keys as they lie. SmolLM2's Generator
  at batch 32 (64 tokens after 256): 14.76 -> 13.95 s
  (docs/benchmarks/generator_keys_before_after_float32.json). bfloat16: slots
  second to last, because XLA:CPU writes a decode step's key column into a (D, S)
  bfloat16 cache by rewriting the whole cache (0.6 ms a layer at batch 32,
  profile), a row of an (S, D) one in place.
  """
  return jnp.dtype(dtype).itemsize >= 4


def key_slot_axis(dtype) -> int:
  """The slot axis of keys of ``dtype`` (values: always 2)."""
  return 3 if keys_slot_last(dtype) else 2


def _first_keys(k, n: int):
  """Keys ``k``'s first ``n`` slots."""
  return jax.lax.slice_in_dim(k, 0, n, axis=key_slot_axis(k.dtype))


def _scores(q, k):
  """q (B, KV, M, D) against keys k -> (B, KV, M, S), summed in float32."""
  return _bdot(q, k, 3, 2 if keys_slot_last(k.dtype) else 3)


def _masked_softmax(scores, mask, dtype, axis=-1):
  # A select, not an additive bias: a query with no visible key gets a finite
  # uniform softmax instead of NaN.
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=axis).astype(dtype)


def _attend(q, k, v, mask, dtype):
  """q (B, L, KV, G, D), keys k, v (B, KV, S, D), mask (B, L, S) -> as q:
  one block of every query (an einsum over these layouts left XLA:CPU a bfloat16
  product its fallback dot cannot run)."""
  out = _attend_block(jnp.transpose(q, (0, 2, 3, 1, 4)), k, v, mask, dtype)
  return jnp.transpose(out, (0, 3, 1, 2, 4))


def _attend_one_query(q, k, v, mask, dtype):
  """One query per row (a decode step): products batched over (row, kv head),
  summed in float32: (G, D) x keys for the scores, (G, S) x (S, D) for the output.
  SmolLM2's 30 layers' decode attention at batch 32 (320 slots, float32): 45 ms
  with the keys stored (S, D), 31 ms stored (D, S) (probe)."""
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  scores = _scores(q[:, 0], k) * scale                                   # (B, KV, G, S)
  probs = _masked_softmax(scores, mask[:, :, None, :], dtype)
  return _bdot(probs, v, 3, 2).astype(dtype)[:, None]                   # (B, 1, KV, G, D)


def decode_step(q, cache, own, mask, dtype):
  """One query per row (a decode step) over the cache and its own key and value,
  kept apart so that the step never reads the slot it writes.

  q (B, 1, KV, G, D); cache (keys, values (B, KV, S, D)) and own (its key and
  value, one slot each); mask (B, 1, S): the cache slots each query sees besides
  its own key (always seen). Returns (B, 1, KV, G, D) in ``dtype``.
  """
  (k, v), (own_k, own_v) = cache, own
  slots = v.shape[2]
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  q1 = q[:, 0]
  scores = jnp.concatenate([_scores(q1, k), _scores(q1, own_k)], 3) * scale
  seen = jnp.concatenate([mask[:, 0], jnp.ones_like(mask[:, 0, :1])], 1)    # (B, S + 1)
  probs = _masked_softmax(scores, seen[:, None, None, :], dtype)          # (B, KV, G, S + 1)
  out = (_bdot(probs[..., :slots], v, 3, 2)
         + _bdot(probs[..., slots:], own_v, 3, 2))
  return out.astype(dtype)[:, None]


def _bdot(a, b, contract_a: int, contract_b: int):
  """Batched over the leading (batch, kv head) axes, summed in float32."""
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0, 1), (0, 1))),
                             preferred_element_type=jnp.float32)


def _attend_block(q, k, v, mask, dtype):
  """q (B, KV, G, l, D), keys k, v (B, KV, s, D), mask (B, l, s) -> same as q."""
  batch, nkv, group, length, d = q.shape
  slots = v.shape[2]
  scale = 1.0 / jnp.sqrt(jnp.float32(d))
  scores = _scores(q.reshape(batch, nkv, group * length, d), k) * scale
  scores = scores.reshape(batch, nkv, group, length, slots)
  probs = _masked_softmax(scores, mask[:, None, None], dtype)
  out = _bdot(probs.reshape(batch, nkv, group * length, slots), v, 3, 2)
  return out.astype(dtype).reshape(q.shape)


def block_size(length: int) -> int:
  """Queries per block for ``length`` queries (a multiple of QUERY_BLOCK)."""
  narrow_blocks = -(-length // QUERY_BLOCK)
  return QUERY_BLOCK * -(-narrow_blocks // MAX_BLOCKS)


def attention(q, k, v, mask, first_slot, dtype):
  """softmax(q k^T / sqrt(D)) v with key-value head sharing.

  q (B, L, KV, G, D): the G query heads of each key-value head; keys k (see
  `keys_slot_last`) and values v (B, KV, S, D); mask (B, L, S) bool, the slots
  each query sees. ``first_slot``: the slot of the first query when it is a Python int and query i, at slot
  first_slot + i, sees no slot after its own (a causal prompt, with or without
  a cache before it); then the queries run in blocks. None (slots known only at
  run time): one product. One query (a decode step): two small batched products.
  Returns (B, L, KV, G, D) in ``dtype``.
  """
  length = q.shape[1]
  if length == 1:
    return _attend_one_query(q, k, v, mask, dtype)
  block = block_size(length)
  if first_slot is None or length <= block:
    return _attend(q, k, v, mask, dtype)
  visible = min(v.shape[2], first_slot + length)
  q = jnp.transpose(q, (0, 2, 3, 1, 4))
  outs = []
  for start in range(0, length, block):
    stop = min(length, start + block)
    keys = min(visible, first_slot + stop)
    outs.append(_attend_block(q[:, :, :, start:stop], _first_keys(k, keys),
                              v[:, :, :keys], mask[:, start:stop, :keys], dtype))
  return jnp.transpose(jnp.concatenate(outs, 3), (0, 3, 1, 2, 4))
