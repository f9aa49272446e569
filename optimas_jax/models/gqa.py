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

Keys and values are heads-major, (B, KV, S, D), the KV cache's own layout
(models/llama.init_cache), so every product batches over (row, kv head) without a
copy of the keys. A decode step (one query a row) is two such products per layer.

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


def _masked_softmax(scores, mask, dtype, axis=-1):
  # A select, not an additive bias: a query with no visible key gets a finite
  # uniform softmax instead of NaN.
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=axis).astype(dtype)


def _attend(q, k, v, mask, dtype):
  """q (B, L, KV, G, D), k and v (B, KV, S, D), mask (B, L, S) -> (B, L, KV, G, D)."""
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  scores = jnp.einsum("blkgd,bksd->bkgls", q, k, preferred_element_type=jnp.float32)
  probs = _masked_softmax(scores * scale, mask[:, None, None, :, :], dtype)
  return jnp.einsum("bkgls,bksd->blkgd", probs, v)


def _attend_one_query(q, k, v, mask, dtype):
  """One query per row (a decode step): products batched over (row, kv head),
  summed in float32, with the slots as the rows of both: (S, D) x (D, G) for the
  scores, (G, S) x (S, D) for the output. XLA:CPU ran the scores as (G, D) x (D, S)
  in 37 ms over SmolLM2's 30 layers at batch 32, as (S, D) x (D, G) in 30 (probe)."""
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  scores = _bdot(k, q[:, 0], 3, 3) * scale                               # (B, KV, S, G)
  probs = _masked_softmax(scores, mask[:, :, :, None], dtype, axis=2)
  return _bdot(probs, v, 2, 2).astype(dtype)[:, None]                   # (B, 1, KV, G, D)


def decode_step(q, cache, own, mask, dtype):
  """One query per row (a decode step) over the cache and its own key and value,
  kept apart so that the step never reads the slot it writes.

  q (B, 1, KV, G, D); cache (k, v), each (B, KV, S, D), and own (k, v), each
  (B, KV, 1, D); mask (B, 1, S): the cache slots each query sees besides its own
  key (always seen). Returns (B, 1, KV, G, D) in ``dtype``.
  """
  (k, v), (own_k, own_v) = cache, own
  slots = k.shape[2]
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  q1 = q[:, 0]
  scores = jnp.concatenate([_bdot(k, q1, 3, 3), _bdot(own_k, q1, 3, 3)], 2) * scale
  seen = jnp.concatenate([mask[:, 0], jnp.ones_like(mask[:, 0, :1])], 1)    # (B, S + 1)
  probs = _masked_softmax(scores, seen[:, None, :, None], dtype, axis=2)    # (B, KV, S + 1, G)
  out = (_bdot(probs[:, :, :slots], v, 2, 2)
         + _bdot(probs[:, :, slots:], own_v, 2, 2))
  return out.astype(dtype)[:, None]


def _bdot(a, b, contract_a: int, contract_b: int):
  """Batched over the leading (batch, kv head) axes, summed in float32."""
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0, 1), (0, 1))),
                             preferred_element_type=jnp.float32)


def _attend_block(q, k, v, mask, dtype):
  """q (B, KV, G, l, D), k and v (B, KV, s, D) heads-major, mask (B, l, s) -> same as q."""
  batch, nkv, group, length, d = q.shape
  scale = 1.0 / jnp.sqrt(jnp.float32(d))
  scores = _bdot(q.reshape(batch, nkv, group * length, d), k, 3, 3) * scale
  scores = scores.reshape(batch, nkv, group, length, k.shape[2])
  probs = _masked_softmax(scores, mask[:, None, None], dtype)
  out = _bdot(probs.reshape(batch, nkv, group * length, k.shape[2]), v, 3, 2)
  return out.astype(dtype).reshape(q.shape)


def block_size(length: int) -> int:
  """Queries per block for ``length`` queries (a multiple of QUERY_BLOCK)."""
  narrow_blocks = -(-length // QUERY_BLOCK)
  return QUERY_BLOCK * -(-narrow_blocks // MAX_BLOCKS)


def attention(q, k, v, mask, first_slot, dtype):
  """softmax(q k^T / sqrt(D)) v with key-value head sharing.

  q (B, L, KV, G, D): the G query heads of each key-value head; k and v
  (B, KV, S, D); mask (B, L, S) bool, the slots each query sees. ``first_slot``:
  the slot of the first query when it is a Python int and query i, at slot
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
  visible = min(k.shape[2], first_slot + length)
  q = jnp.transpose(q, (0, 2, 3, 1, 4))
  k, v = (x[:, :, :visible] for x in (k, v))
  outs = []
  for start in range(0, length, block):
    stop = min(length, start + block)
    keys = min(visible, first_slot + stop)
    outs.append(_attend_block(q[:, :, :, start:stop], k[:, :, :keys], v[:, :, :keys],
                              mask[:, start:stop, :keys], dtype))
  return jnp.transpose(jnp.concatenate(outs, 3), (0, 3, 1, 2, 4))
