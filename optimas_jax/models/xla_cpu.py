"""Per-program XLA:CPU options for float32 encoder programs.

XLA:CPU (jaxlib 0.10) routes dots through YNNPACK fusions by default. For
MiniLM's float32 forward they run at 0.65x PyTorch's speed, XLA's own dot
emitter at 1.0x (experiments/benchmarks/encoder.py, idle; 31.8 -> 48.8
sentences/s), and an LRF step whose frozen layers run forward gains 17%; the
full fine-tune step is unchanged. bfloat16 decode needs YNNPACK (76 vs 56
tokens/s at batch 32), so the option is given to the encoder's programs
(`jax.jit(compiler_options=)`), never process-wide.

Training programs (forward + backward) keep XLA's dot emitter but give YNNPACK the
reductions (LIBRARY_FUSION_TYPE_REDUCE: softmax and LayerNorm statistics, bias and
LayerNorm gradients summed over tokens): the LRF step, idle, 3 interleaved processes
per option, every run with it faster than every run without: full fine-tune 16.9 ->
18.6 pairs/s, same algorithm 118.7 -> 127.1
(docs/benchmarks/ynn_reduce_train_before_after_idle.json). The forward-only encoder
is slower with it (83 -> 70 sentences/s, probe), so inference programs keep "".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_TRAINING_FUSIONS = "LIBRARY_FUSION_TYPE_REDUCE"


@functools.cache
def _supported() -> bool:
  if jax.default_backend() != "cpu":
    return False
  try:       # an XLA without the option refuses it at compile time
    jax.jit(lambda x: x + 1, compiler_options={_OPTION: _TRAINING_FUSIONS}
            ).lower(1.0).compile()
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def encoder_options(dtype, training: bool = False) -> dict | None:
  """compiler_options for a program of a `dtype` encoder (None: the defaults);
  `training`: a program with the backward pass."""
  if jnp.dtype(dtype) != jnp.float32 or not _supported():
    return None
  return {_OPTION: _TRAINING_FUSIONS if training else ""}
