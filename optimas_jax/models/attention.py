"""The encoder's attention core, softmax(q k^T / sqrt(D)) v, with its backward written out.

Why not JAX's own derivative: on XLA:CPU the autodiff backward of the two
einsums and the masked softmax took 34-36 ms of one MiniLM layer's forward +
backward at 16 x 128 tokens (float32 and bfloat16 alike), and this one 19 ms
(float32) and 14 ms (bfloat16): its products are the four of the textbook
backward (dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q), the softmax's
derivative is one fused expression, and for bfloat16 the two products that
contract the query axis get P^T and dS^T written out row-major first: XLA:CPU
runs a bfloat16 product with a transposed operand at float32 speed
(models/matmul.py). The math is the same; the sums may round differently in the
last bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optimas_jax.models.matmul import row_major


def _bdot(a, b, contract_a: int, contract_b: int):
  """Batched over the two leading (batch, head) axes, summed in float32."""
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0, 1), (0, 1))),
                             preferred_element_type=jnp.float32)


def _query_contracted(x, y):
  """x^T y over the query axis: x (B, H, Q, K), y (B, H, Q, D) -> (B, H, K, D).

  float32 contracts the query axis in place; bfloat16 first writes x^T out
  row-major (a transposed bfloat16 operand runs at float32 speed)."""
  if jnp.dtype(x.dtype).itemsize < 4:
    x_t = row_major(jnp.swapaxes(x, -1, -2))
    if x_t is not None:
      return _bdot(x_t, y, 3, 2)
  return _bdot(x, y, 2, 2)


def _relayout(x):
  """(B, L, H, D) <-> (B, H, L, D); written out row-major for bfloat16, whose
  products run at float32 speed on an operand left in another layout."""
  swapped = jnp.transpose(x, (0, 2, 1, 3))
  if jnp.dtype(x.dtype).itemsize < 4:
    return row_major(swapped) if x.shape[-1] % 2 == 0 else swapped
  return swapped


def _forward(q, k, v, key_ok):
  """(B, L, H, D) inputs, heads-major inside; (output, residuals)."""
  q, k, v = _relayout(q), _relayout(k), _relayout(v)
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  # An additive -1e9 on hidden keys (a row with none stays finite: uniform). A
  # select on the mask instead doubled the core's forward + backward on XLA:CPU.
  bias = jnp.where(key_ok, 0.0, -1e9).astype(jnp.float32)[:, None, None, :]
  scores = _bdot(q, k, 3, 3) * scale + bias
  probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
  out = _bdot(probs, v, 3, 2).astype(q.dtype)
  return _relayout(out), (q, k, v, probs)


def _backward(residuals, d_out):
  q, k, v, probs = residuals
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  d_out = _relayout(d_out.astype(q.dtype))
  d_probs = _bdot(d_out, v, 3, 3)
  d_v = _query_contracted(probs, d_out).astype(v.dtype)
  p = probs.astype(jnp.float32)
  d_scores = (p * (d_probs - jnp.sum(d_probs * p, axis=-1, keepdims=True)) * scale
              ).astype(q.dtype)
  d_q = _bdot(d_scores, k, 3, 2).astype(q.dtype)
  d_k = _query_contracted(d_scores, q).astype(k.dtype)
  return _relayout(d_q), _relayout(d_k), _relayout(d_v), None


@jax.custom_vjp
def _attention(q, k, v, key_ok):
  return _forward(q, k, v, key_ok)[0]


_attention.defvjp(_forward, _backward)


def attention(q, k, v, attention_mask):
  """q, k, v (B, L, heads, D) in the model's dtype; attention_mask (B, L), 1 on real
  keys. Scores and softmax in float32; returns (B, L, heads, D) in q's dtype."""
  return _attention(q, k, v, attention_mask.astype(bool))
