"""The decoder's blocked causal attention (models/gqa.py) against one masked product."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models import gqa, llama

# first_slot and dtype are static: they choose the path.
_attention = jax.jit(gqa.attention, static_argnums=(4, 5))


def _cache_layout(k):
  """Keys (B, KV, S, D) in the cache's layout for their dtype (gqa.keys_slot_last)."""
  return jnp.swapaxes(k, 2, 3) if gqa.keys_slot_last(k.dtype) else k


def _causal_inputs(length, first_slot, slots, pads, seed=0, dtype=jnp.float32):
  """q (B, L, KV=2, G=3, D=8) at slots first_slot.., k/v over ``slots``; row b has
  ``pads[b]`` hidden slots at the start (left padding) and nothing after the prompt."""
  rng = np.random.default_rng(seed)
  batch = len(pads)
  q = jnp.asarray(rng.standard_normal((batch, length, 2, 3, 8)), dtype)
  k, v = (jnp.asarray(rng.standard_normal((batch, 2, slots, 8)), dtype) for _ in range(2))
  k = _cache_layout(k)
  query_slot = first_slot + np.arange(length)
  key_ok = np.arange(slots)[None, :] >= np.asarray(pads)[:, None]
  mask = (np.arange(slots)[None, None, :] <= query_slot[None, :, None]) & key_ok[:, None, :]
  real_query = query_slot[None, :] >= np.asarray(pads)[:, None]
  return q, k, v, jnp.asarray(mask), real_query


@pytest.mark.parametrize("length,first_slot,slots", [
    (200, 0, 200),     # a prompt without a cache: 4 blocks, the last one partial
    (150, 20, 230),    # after a 20-slot prefix, in a cache with room for new tokens
    (600, 0, 640),     # past MAX_BLOCKS blocks of 64: wider blocks
])
def test_blocks_equal_one_product_at_every_real_query(length, first_slot, slots):
  q, k, v, mask, real = _causal_inputs(length, first_slot, slots, pads=[0, 37, first_slot])
  blocked = _attention(q, k, v, mask, first_slot, jnp.float32)
  whole = _attention(q, k, v, mask, None, jnp.float32)
  assert gqa.block_size(length) < length             # the blocked path ran
  np.testing.assert_allclose(np.asarray(blocked)[real], np.asarray(whole)[real],
                             rtol=1e-5, atol=1e-5)


def test_gradients_through_the_blocks_equal_one_products():
  q, k, v, mask, real = _causal_inputs(160, 0, 160, pads=[0, 70])
  weights = jnp.asarray(real, jnp.float32)[:, :, None, None, None]   # real queries only
  loss = lambda first: lambda q, k, v: jnp.sum(
      gqa.attention(q, k, v, mask, first, jnp.float32) * weights)
  blocked, whole = (jax.jit(jax.grad(loss(first), argnums=(0, 1, 2)))(q, k, v)
                    for first in (0, None))
  for a, b in zip(blocked, whole):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bfloat16_blocks_stay_within_rounding_of_one_product():
  q, k, v, mask, real = _causal_inputs(130, 0, 130, pads=[0, 5], dtype=jnp.bfloat16)
  blocked = _attention(q, k, v, mask, 0, jnp.bfloat16)
  assert blocked.dtype == jnp.bfloat16
  whole = _attention(q, k, v, mask, None, jnp.bfloat16)
  np.testing.assert_allclose(np.asarray(blocked, np.float32)[real],
                             np.asarray(whole, np.float32)[real], atol=0.05)


def test_block_sizes():
  assert [gqa.block_size(n) for n in (1, 64, 65, 512, 513, 1024)] == [64, 64, 64, 64, 128, 128]


def test_a_decoders_hidden_states_and_cached_prefill_do_not_move(monkeypatch):
  """A tiny decoder's 150-token prompt, run whole and prefilled into a cache
  after a prefix, equals the same with blocks turned off."""
  cfg = llama.LlamaConfig.tiny()
  model = llama.LlamaDecoder(cfg)
  rng = np.random.default_rng(1)
  ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 150)), jnp.int32)
  attention_mask = jnp.asarray(np.arange(150)[None] >= np.array([[0], [40]]), jnp.int32)
  params = model.init(jax.random.key(0), ids[:, :4], attention_mask[:, :4])

  def run():
    @jax.jit            # a new function per call: traced with the block size of the moment
    def passes(params):
      hidden = model.apply(params, ids, attention_mask, method=model.hidden_states)
      cache = llama.init_cache(cfg, 2, 180)
      _, cache = model.apply(params, ids[:, :10], jnp.arange(10)[None].repeat(2, 0),
                             _prefix_mask(10, 180), cache, 0, method=model.forward_cached)
      rest, cache = model.apply(params, ids[:, 10:], 10 + jnp.arange(140)[None].repeat(2, 0),
                                _prefix_mask(150, 180)[:, 10:], cache, 10,
                                method=model.forward_cached)
      return hidden, rest, cache
    return passes(params)

  blocked = run()
  monkeypatch.setattr(gqa, "QUERY_BLOCK", 1024)
  whole = run()
  real = np.asarray(attention_mask, bool)
  np.testing.assert_allclose(np.asarray(blocked[0])[real], np.asarray(whole[0])[real],
                             rtol=1e-5, atol=1e-5)
  # Both paths ran: at left padding (no visible key) the uniform softmax spans the
  # first block's keys in one and every key in the other.
  assert not np.allclose(np.asarray(blocked[0])[~real], np.asarray(whole[0])[~real])
  np.testing.assert_allclose(blocked[1], whole[1], rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(blocked[2]), jax.tree.leaves(whole[2])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _prefix_mask(queries, slots):
  """(2, queries, slots): query i sees slots <= i."""
  mask = np.arange(slots)[None, :] <= np.arange(queries)[:, None]
  return jnp.asarray(np.broadcast_to(mask, (2, queries, slots)))


@pytest.mark.parametrize("dtype,atol", [(jnp.float32, 1e-5), (jnp.bfloat16, 0.02)])
def test_a_decode_step_equals_the_reference_attention(dtype, atol):
  """One query per row over a cache whose rows see different slots, against
  softmax(q k^T / sqrt(D)) v in float64 with each query head's own kv head."""
  rng = np.random.default_rng(2)
  q = jnp.asarray(rng.standard_normal((3, 1, 2, 3, 8)), dtype)
  k, v = (jnp.asarray(rng.standard_normal((3, 2, 40, 8)), dtype) for _ in range(2))
  seen = np.arange(40)[None, :] < np.array([[40], [17], [1]])
  mask = jnp.asarray(seen[:, None, :] & (np.arange(40) >= np.array([[0], [5], [0]]))[:, None])
  step = gqa.attention(q, _cache_layout(k), v, mask, None, dtype)
  assert step.shape == q.shape and step.dtype == dtype
  q64, k64, v64 = (np.asarray(x, np.float64) for x in (q, k, v))
  scores = np.einsum("bkgd,bksd->bkgs", q64[:, 0], k64) / np.sqrt(8)
  scores = np.where(np.asarray(mask)[:, :, None, :], scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  expected = np.einsum("bkgs,bksd->bkgd", probs, v64)[:, None]
  np.testing.assert_allclose(np.asarray(step, np.float32), expected, rtol=1e-5, atol=atol)
  one_block = gqa._attend(q, _cache_layout(k), v, mask, dtype)
  np.testing.assert_allclose(np.asarray(step, np.float32), np.asarray(one_block, np.float32),
                             rtol=1e-5, atol=atol)
