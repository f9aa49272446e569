"""The encoder's attention core with its written-out backward (models/attention.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models.attention import attention


def _reference(q, k, v, mask):
  """JAX's own derivative of the textbook formula, in float32."""
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  scores = jnp.where(mask.astype(bool)[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v)


def _inputs(dtype, head_dim=8, seed=0):
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.standard_normal((3, 16, 2, head_dim)), dtype) for _ in range(3))
  lengths = np.array([16, 9, 1])                      # padded rows, one with a single key
  mask = jnp.asarray((np.arange(16)[None] < lengths[:, None]).astype(np.int32))
  weights = jnp.asarray(rng.standard_normal((3, 16, 2, head_dim)), jnp.float32)
  return q, k, v, mask, weights


def _value_and_grads(fn, q, k, v, mask, weights):
  loss = lambda q, k, v: jnp.sum(fn(q, k, v, mask).astype(jnp.float32) * weights)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


def test_float32_equals_autodiff_of_the_formula():
  q, k, v, mask, weights = _inputs(jnp.float32)
  np.testing.assert_allclose(attention(q, k, v, mask), _reference(q, k, v, mask),
                             rtol=1e-5, atol=1e-6)
  ours, ref = (_value_and_grads(f, q, k, v, mask, weights) for f in (attention, _reference))
  np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5)
  for a, b in zip(ours[1], ref[1]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head_dim", [8, 5])       # 5: no row-major copy (odd), same math
def test_bfloat16_follows_float32_within_its_rounding(head_dim):
  q, k, v, mask, weights = _inputs(jnp.bfloat16, head_dim)
  out = attention(q, k, v, mask)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), _reference(q, k, v, mask),
                             atol=0.05)
  ours = _value_and_grads(attention, q, k, v, mask, weights)
  ref = _value_and_grads(_reference, q, k, v, mask, weights)
  for a, b in zip(ours[1], ref[1]):
    assert a.dtype == jnp.bfloat16
    scale = float(jnp.abs(b).max())
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03 * scale)


def test_a_row_with_no_visible_key_stays_finite():
  q, k, v, mask, weights = _inputs(jnp.float32)
  mask = mask.at[2].set(0)
  value, grads = _value_and_grads(attention, q, k, v, mask, weights)
  assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
  # Every key hidden: a uniform average of the row's values.
  np.testing.assert_allclose(attention(q, k, v, mask)[2], np.broadcast_to(
      np.asarray(v[2]).mean(0), (16,) + v.shape[2:]), rtol=1e-5, atol=1e-6)
