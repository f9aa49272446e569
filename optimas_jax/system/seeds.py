"""Deterministic per-example randomness.

Every example carries its own 64-bit seed, and a component derives its
randomness from (example seed, component name, sample index). The result of
an example therefore never depends on which other examples share its batch,
so `run_from` with the recorded seeds reproduces `run` exactly, and a
Monte-Carlo rollout `s` of an example is the same whether it was computed
alone or batched with others (which is what makes rollout caching sound).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np


def derive_seed(*parts) -> int:
  """A stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
  digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little") >> 1


@dataclasses.dataclass(frozen=True)
class BatchRng:
  """The randomness handed to a component's batch call: one seed per example."""

  seeds: tuple[int, ...]

  def __len__(self) -> int:
    return len(self.seeds)

  def numpy(self, i: int) -> np.random.Generator:
    """A numpy Generator for example `i` of the batch."""
    return np.random.default_rng(self.seeds[i])

  def jax_keys(self):
    """A (B,) array of typed JAX keys, one per example (for batched sampling)."""
    import jax  # host-side core stays importable without initialising JAX
    import jax.numpy as jnp
    # All 63 bits of each seed become the key's two 32-bit words.
    words = np.array([[s >> 32, s & 0xFFFFFFFF] for s in self.seeds], dtype=np.uint32)
    return jax.random.wrap_key_data(jnp.asarray(words.reshape(-1, 2)), impl="threefry2x32")

  def subset(self, indices) -> "BatchRng":
    return BatchRng(tuple(self.seeds[i] for i in indices))
