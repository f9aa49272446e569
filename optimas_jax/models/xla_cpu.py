"""A per-program XLA:CPU option for float32 encoder programs.

XLA:CPU (jaxlib 0.10) routes dots through YNNPACK fusions by default. For
MiniLM's float32 forward they run at 0.65x PyTorch's speed, XLA's own dot
emitter at 1.0x (experiments/benchmarks/encoder.py, idle; 31.8 -> 48.8
sentences/s), and an LRF step whose frozen layers run forward gains 17%; the
full fine-tune step is unchanged. bfloat16 decode needs YNNPACK (76 vs 56
tokens/s at batch 32), so the option is given to the encoder's programs
(`jax.jit(compiler_options=)`), never process-wide.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def _supported() -> bool:
  if jax.default_backend() != "cpu":
    return False
  try:       # an XLA without the option refuses it at compile time
    jax.jit(lambda x: x + 1, compiler_options={_OPTION: ""}).lower(1.0).compile()
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def encoder_options(dtype) -> dict | None:
  """compiler_options for a program of a `dtype` encoder (None: the defaults)."""
  if jnp.dtype(dtype) != jnp.float32 or not _supported():
    return None
  return {_OPTION: ""}
