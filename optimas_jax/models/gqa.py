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

A decode step (one query a row) runs as multiply-and-sum over the cache
(``_attend_one_query``): XLA:CPU's batched product of its small pieces is slower.

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
  """q (B, L, KV, G, D), k and v (B, S, KV, D), mask (B, L, S) -> (B, L, KV, G, D)."""
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  scores = jnp.einsum("blkgd,bskd->bkgls", q, k, preferred_element_type=jnp.float32)
  probs = _masked_softmax(scores * scale, mask[:, None, None, :, :], dtype)
  return jnp.einsum("bkgls,bskd->blkgd", probs, v)


def _attend_one_query(q, k, v, mask, dtype):
  """One query per row (a decode step): products as multiply-and-sum, in float32.

  The (G, D) x (D, S) products of a decode step are too small for XLA:CPU's
  batched dot (one thread, ~4x slower here); as an elementwise product summed
  over D (then over S) they fuse into loops that stream the cache once.
  """
  q32 = q[:, 0].astype(jnp.float32)                                    # (B, KV, G, D)
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  scores = jnp.sum(q32[:, None] * k.astype(jnp.float32)[:, :, :, None, :], -1) * scale
  probs = _masked_softmax(scores, mask[:, 0, :, None, None], dtype, axis=1)  # (B, S, KV, G)
  out = jnp.sum(probs.astype(jnp.float32)[..., None] * v.astype(jnp.float32)[:, :, :, None, :],
                1)
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
  (B, S, KV, D); mask (B, L, S) bool, the slots each query sees. ``first_slot``:
  the slot of the first query when it is a Python int and query i, at slot
  first_slot + i, sees no slot after its own (a causal prompt, with or without
  a cache before it); then the queries run in blocks. None (slots known only at
  run time): one product. One query (a decode step) runs as multiply-and-sum.
  Returns (B, L, KV, G, D) in ``dtype``.
  """
  length = q.shape[1]
  if length == 1:
    return _attend_one_query(q, k, v, mask, dtype)
  block = block_size(length)
  if first_slot is None or length <= block:
    return _attend(q, k, v, mask, dtype)
  visible = min(k.shape[1], first_slot + length)
  q = jnp.transpose(q, (0, 2, 3, 1, 4))
  k, v = (jnp.transpose(x[:, :visible], (0, 2, 1, 3)) for x in (k, v))
  outs = []
  for start in range(0, length, block):
    stop = min(length, start + block)
    keys = min(visible, first_slot + stop)
    outs.append(_attend_block(q[:, :, :, start:stop], k[:, :, :keys], v[:, :, :keys],
                              mask[:, start:stop, :keys], dtype))
  return jnp.transpose(jnp.concatenate(outs, 3), (0, 3, 1, 2, 4))
