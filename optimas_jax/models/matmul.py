"""The product inside every Dense layer of this project's models, with its own backward.

`dense_dot(dtype)` is a `dot_general` for `flax.linen.Dense`. Its forward is the
plain product (float32-accumulated for low-precision models); its backward is
written out: dx = dy @ W^T and dW = x^T @ dy over the flattened leading axes.
Why not JAX's own transpose rule: on XLA:CPU that rule's dW product asks for its
(tokens, features) operand transposed, and XLA fuses the transpose into the
elementwise producer before it (GELU's derivative, say), giving a loop that writes
column by column: 28 ms of MiniLM's 130 ms MLP forward+backward at 2048 tokens.
The written-out dW contracts the token axis of both operands, which XLA:CPU runs
without a copy (the MLP: 130 -> 64 ms). The math is the same; the rounding of the
sums may differ in the last bits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _product(x, w, accumulate):
  """x (..., I) @ w (I, O), summed in `accumulate`, returned in x's dtype."""
  out = jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())),
                            preferred_element_type=accumulate)
  return out.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_product(x, w, accumulate):
  return _product(x, w, accumulate)


def _forward(x, w, accumulate):
  return _product(x, w, accumulate), (x, w)


def row_major(x):
  """``x`` (typically a transpose) written out row-major. A plain transpose is folded
  into the next product's operand layout, and XLA:CPU runs a bfloat16 product with a
  transposed operand at float32 speed; splitting the last axis behind an optimization
  barrier forces the copy. None where the last axis is odd-sized."""
  last = x.shape[-1]
  step = next((d for d in (8, 4, 2) if last % d == 0), None)
  if step is None:
    return None
  return jax.lax.optimization_barrier(x.reshape(x.shape[:-1] + (last // step, step))
                                      ).reshape(x.shape)


def _backward(accumulate, residuals, dy):
  x, w = residuals
  dx = jax.lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())),
                           preferred_element_type=accumulate).astype(x.dtype)
  x2 = x.reshape(-1, x.shape[-1])
  dy2 = dy.reshape(-1, dy.shape[-1])
  x2t = row_major(x2.T) if jnp.dtype(x.dtype).itemsize < 4 else None
  if x2t is not None:
    # bfloat16: x^T copied row-major, then a plain product on the bf16 units (MiniLM's
    # dW products at 2048 tokens: 12.6-15.7 -> 7.1-7.2 ms; 1.5 MB copies).
    dw = jax.lax.dot_general(x2t, dy2, (((1,), (0,)), ((), ())),
                             preferred_element_type=accumulate)
  else:
    # float32: tokens contracted on both sides, (I, O) with no transposed operand.
    dw = jax.lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())),
                             preferred_element_type=accumulate)
  return dx, dw.astype(w.dtype)


_dense_product.defvjp(_forward, _backward)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None,
                      preferred_element_type=None, **kwargs):
  """`nn.Dense(dot_general=dense_dot_general)`: the product summed in float32 and
  returned in the inputs' dtype.

  Low precisions sum in float32 too: XLA:CPU runs a bfloat16 dot that accumulates
  in float32 on the CPU's bf16 units, 2.3x one that returns bfloat16 (384 vs 170
  GFLOP/s at 2048^3, experiments/benchmarks/matmul_peak.py), and the sum is more
  accurate.
  """
  del precision, preferred_element_type
  (contract, batch) = dimension_numbers
  if kwargs or rhs.ndim != 2 or batch != ((), ()) or tuple(map(tuple, contract)) != (
      (lhs.ndim - 1,), (0,)):
    raise ValueError(f"dense_dot_general: a Dense product (..., I) x (I, O) expected, "
                     f"got {lhs.shape} x {rhs.shape} with {dimension_numbers}")
  return _dense_product(lhs, rhs, jnp.float32)
