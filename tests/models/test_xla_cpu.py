"""Per-program XLA:CPU options of the float32 encoder (models/xla_cpu.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models import bert, xla_cpu

OPTION = "xla_cpu_experimental_ynn_fusion_type"

# Elsewhere the options are None by design (xla_cpu._supported).
pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")


def test_training_programs_get_ynnpack_reductions_and_inference_none():
  assert xla_cpu.encoder_options(jnp.float32) == {OPTION: ""}
  assert xla_cpu.encoder_options(jnp.float32, training=True) == {
      OPTION: "LIBRARY_FUSION_TYPE_REDUCE"}
  assert xla_cpu.encoder_options(jnp.bfloat16) is None            # YNNPACK's defaults
  assert xla_cpu.encoder_options(jnp.bfloat16, training=True) is None


def test_a_layers_gradients_agree_under_both_options():
  """YNNPACK's reductions may round differently, never compute something else."""
  cfg = bert.BertConfig.tiny()
  layer = bert.BertLayer(cfg)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 16, cfg.hidden_size)), jnp.float32)
  mask = jnp.asarray((np.arange(16)[None] < np.array([16, 9, 2])[:, None]).astype(np.int32))
  weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  params = layer.init(jax.random.PRNGKey(0), x, mask)
  loss = lambda p, x: jnp.sum(layer.apply(p, x, mask) * weights)
  results = [jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), compiler_options=opts)(params, x)
             for opts in (xla_cpu.encoder_options(jnp.float32),
                          xla_cpu.encoder_options(jnp.float32, training=True))]
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
