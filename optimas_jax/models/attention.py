"""The encoder's attention core, softmax(q k^T / sqrt(D)) v, with its backward written out.

Why not JAX's own derivative: on XLA:CPU the autodiff backward of the two
einsums and the masked softmax took 30-37 ms of one MiniLM layer's forward +
backward at 16 x 128 tokens (float32 and bfloat16 alike), and this one 21 ms
(float32, under YNNPACK; XLA's own dot emitter, which the float32 encoder
programs use, keeps it at ~34 ms) and 11.6 ms (bfloat16). Three things make the
difference: the mask is an additive -1e9 (a select on it doubled the core's
time, same math); the backward is the textbook four products (dP = dO V^T,
dV = P^T dO, dQ = dS K, dK = dS^T Q) with the softmax's derivative one fused
expression; and in bfloat16 the operands are written out row-major first
(heads-major q, k, v; P^T and dS^T for the two products that contract the query
axis), because XLA:CPU runs a bfloat16 product on a transposed operand at float32
speed (models/matmul.py). The sums may round differently in the last bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optimas_jax.models.matmul import row_major


def _bdot(a, b, contract_a: int, contract_b: int):
  """Batched over the two leading (batch, head) axes, summed in float32."""
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0, 1), (0, 1))),
                             preferred_element_type=jnp.float32)


def _low_precision_row_major(x):
  """x written out row-major when it is bfloat16 (and its last axis even), else x."""
  if jnp.dtype(x.dtype).itemsize < 4:
    copied = row_major(x)
    if copied is not None:
      return copied
  return x


def _query_contracted(x, y):
  """x^T y over the query axis: x (B, H, Q, K), y (B, H, Q, D) -> (B, H, K, D).

  float32 contracts the query axis in place; bfloat16 reads x^T written out."""
  if jnp.dtype(x.dtype).itemsize < 4:
    return _bdot(_low_precision_row_major(jnp.swapaxes(x, -1, -2)), y, 3, 2)
  return _bdot(x, y, 2, 2)


def _relayout(x):
  """(B, L, H, D) <-> (B, H, L, D)."""
  return _low_precision_row_major(jnp.transpose(x, (0, 2, 1, 3)))


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
