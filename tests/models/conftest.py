"""Shared fixtures of the model tests."""

import jax
import jax.numpy as jnp
import pytest

from optimas_jax.models import llama


@pytest.fixture(scope="module")
def tiny():
  """(module, params) of a randomly initialised tiny Llama decoder."""
  cfg = llama.LlamaConfig.tiny()
  module = llama.LlamaDecoder(cfg)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = module.init(jax.random.PRNGKey(1), ids, jnp.ones_like(ids))
  return module, params
