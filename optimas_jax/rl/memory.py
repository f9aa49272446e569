"""Per-device memory of an RL step, estimated from shapes before anything compiles.

Parts: the frozen base as placed (split over "fsdp"), the trainable state
(adapter, value head, AdamW moments; replicated), the sampler's KV cache
(a decode chunk's rows split over every device, each holding keys and values
of every layer for prompt + new tokens in the base's dtype), and the
update's activations (a micro-batch's tokens: ~16 hidden-sized float32
vectors per token per layer kept for the backward pass, plus float32 logits).
"""

from __future__ import annotations

import numpy as np

from optimas_jax.models.llama import LlamaConfig
from optimas_jax.rl.config import RLConfig


def kv_cache_bytes(model: LlamaConfig, rows: int, tokens: int) -> int:
  itemsize = np.dtype(model.dtype).itemsize
  return rows * model.num_layers * 2 * tokens * model.num_kv_heads * model.head_dim * itemsize


def activation_bytes(model: LlamaConfig, rows: int, tokens: int) -> int:
  kept = rows * tokens * model.hidden_size * 16 * 4 * model.num_layers
  logits = rows * tokens * model.vocab_size * 4
  return kept + logits


def parts(model: LlamaConfig, config: RLConfig, *, base_bytes: int, state_bytes: int,
          devices: int, rows: int, prompt_tokens: int, decode_rows: int) -> dict[str, int]:
  """name -> bytes on the fullest device. `rows`: the step's padded rows (prompts x
  group); `decode_rows`: rows per decode chunk (the generator's max_batch at most)."""
  tokens = prompt_tokens + config.max_new_tokens
  per_device = lambda n: -(-n // devices)  # noqa: E731
  micro = per_device(rows // (config.minibatches * config.accum_steps))
  return {"base": base_bytes, "trainable state": state_bytes,
          "KV cache": kv_cache_bytes(model, per_device(min(rows, decode_rows)), tokens),
          "activations": activation_bytes(model, micro, tokens)}
