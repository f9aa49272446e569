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
import numbers
from typing import Any

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


# Seeds of requests to an LLM backend (llm/openai_compat.py, llm/serve.py).


def seed_from_rng(rng: Any) -> int:
  """An int seed from an int or a jax PRNG key (raw uint32 or typed)."""
  if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
    return int(rng)
  import jax        # only for keys: an int seed keeps this module jax-free
  import numpy as np
  arr = rng
  if jax.dtypes.issubdtype(getattr(rng, "dtype", None), jax.dtypes.prng_key):
    arr = jax.random.key_data(rng)
  data = np.asarray(arr)
  if data.dtype != np.uint32:
    raise TypeError(f"rng={rng!r}; expected an int seed or a jax PRNG key")
  return int.from_bytes(hashlib.sha256(data.tobytes()).digest()[:4], "little") & 0x7FFFFFFF


def sample_seed(seed: int, sample_index: int) -> int:
  """The k-th seed derived from ``seed``: ``seed`` itself, then hashed ones."""
  if sample_index == 0:
    return seed
  digest = hashlib.sha256(f"{seed}/{sample_index}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def row_seeds(rng: Any, num_rows: int) -> list[int]:
  """One int seed per request, each from that request's own key or seed.

  ``rng`` is one key or seed per request (a stacked jax key array, typed
  (N,) or raw (N, 2), or a list of ints), or a single jax key / int, in
  which case request r gets ``sample_seed(seed, r)`` (the HTTP analogue of
  folding the row index into the key).
  """
  if isinstance(rng, (list, tuple)):
    seeds = [seed_from_rng(r) for r in rng]
  elif isinstance(rng, numbers.Integral):
    seeds = None
  else:
    import jax
    import numpy as np
    typed = jax.dtypes.issubdtype(getattr(rng, "dtype", None), jax.dtypes.prng_key)
    stacked = np.ndim(rng) == (1 if typed else 2)
    # One host copy of the key data, then a hash per row (as seed_from_rng of each key).
    data = np.asarray(jax.random.key_data(rng) if typed else rng)
    seeds = [seed_from_rng(row) for row in data] if stacked else None
  if seeds is None:
    seed = seed_from_rng(rng)
    return [sample_seed(seed, r) for r in range(num_rows)]
  if len(seeds) != num_rows:
    raise ValueError(f"rng holds {len(seeds)} keys or seeds for {num_rows} requests; pass one "
                     "per request or a single key/seed")
  return seeds
