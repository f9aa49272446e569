"""The Dense product with its written-out backward (models/matmul.py)."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models import bert
from optimas_jax.models.matmul import dense_dot_general


def _mlp(dot_general, act):
  class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
      kw = {} if dot_general is None else {"dot_general": dot_general}
      h = act(nn.Dense(48, name="up", **kw)(x))
      return nn.Dense(16, name="down", **kw)(h)
  return Mlp()


def _grads(module, params, x):
  loss = lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x)) ** 2)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)


@pytest.mark.parametrize("shape", [(5, 16), (3, 7, 16), (2, 3, 4, 16)])
def test_gradients_equal_autodiff_in_float32(shape):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ours = _mlp(dense_dot_general, bert.gelu)
  ref = _mlp(None, lambda h: jax.nn.gelu(h, approximate=False))
  params = ref.init(jax.random.PRNGKey(1), x)
  chex.assert_trees_all_close(ours.apply(params, x), ref.apply(params, x), atol=1e-6)
  chex.assert_trees_all_close(_grads(ours, params, x), _grads(ref, params, x),
                              atol=1e-5, rtol=1e-5)


def test_bfloat16_sums_in_float32_and_keeps_its_dtype():
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 256)).astype(jnp.bfloat16)
  w = (jax.random.normal(jax.random.PRNGKey(1), (256, 8)) / 16).astype(jnp.bfloat16)
  dims = (((1,), (0,)), ((), ()))
  out = dense_dot_general(x, w, dims)
  assert out.dtype == jnp.bfloat16
  exact = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  # One rounding to bfloat16 at the end, not one per partial sum.
  np.testing.assert_allclose(np.asarray(out, np.float64), exact, rtol=2 ** -8, atol=1e-3)
  dx, dw = jax.grad(lambda x, w: jnp.sum(dense_dot_general(x, w, dims).astype(jnp.float32)),
                    argnums=(0, 1))(x, w)
  assert (dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16)
  np.testing.assert_allclose(np.asarray(dw, np.float64),
                             np.repeat(np.asarray(x, np.float64).sum(0)[:, None], 8, 1),
                             rtol=2 ** -7, atol=1e-2)


def test_refuses_a_product_that_is_not_a_dense_layer():
  x, w = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
  with pytest.raises(ValueError, match=r"Dense product \(\.\.\., I\) x \(I, O\)"):
    dense_dot_general(x, w, (((2,), (1,)), ((0,), (0,))))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU layout property")
def test_weight_gradient_reads_the_activations_in_place():
  """The reason the backward is written out: XLA:CPU lays out autodiff's dW product
  so that the (tokens, 4H) GELU derivative is written transposed, a column-by-column
  loop (28 of MiniLM's 130 ms MLP forward + backward); ours reads it in place."""
  x = jnp.ones((4, 64, 32))                   # 256 tokens; the MLP's inner width is 128

  def transposed_outputs(module):
    params = module.init(jax.random.PRNGKey(0), x)
    loss = lambda p, x: jnp.sum(module.apply(p, x).mean(1) ** 2)
    hlo = jax.jit(jax.grad(loss)).lower(params, x).compile().as_text()
    return [line for line in hlo.splitlines()
            if "fusion(" in line and "f32[128,256]" in line.split("=")[1][:20]]

  def up_down(dot_general, act):
    class Mlp(nn.Module):
      @nn.compact
      def __call__(self, h):
        kw = {} if dot_general is None else {"dot_general": dot_general}
        return nn.Dense(32, **kw)(act(nn.Dense(128, **kw)(h)))
    return Mlp()

  if not transposed_outputs(up_down(None, lambda h: jax.nn.gelu(h, approximate=False))):
    pytest.skip("this XLA lays out autodiff's dW product without a transposed operand")
  assert transposed_outputs(up_down(dense_dot_general, bert.gelu)) == []
