"""Activations of the frozen lower layers, computed once per text.

With heads-only or top-N training, embeddings and the lower layers never
change, so their output for a text is a pure function of its tokens. It is
computed once (in fixed-shape batches per length bucket) and reused across
epochs and across online LRF updates. Keyed by the token-id hash; one cache
belongs to one set of frozen weights. Bounded by `max_bytes` (least recently
used first out; RL scores every sample through it, so it would otherwise grow
for the whole run); the texts of the batch being filled are never evicted.
"""

from __future__ import annotations

import collections
import functools

import jax
import numpy as np

from optimas_jax.lrf.buckets import bucket_length


class ActivationCache:
  """Host-side store: text key -> pooled (H,) or hidden (len, H) float32."""

  def __init__(self, lrf, buckets, batch_rows: int = 32, max_bytes: int = 1 << 30):
    if max_bytes <= 0:
      raise ValueError(f"ActivationCache(max_bytes={max_bytes}): use > 0")
    self.lrf = lrf
    self.buckets = tuple(buckets)
    self.batch_rows = batch_rows
    self.max_bytes = max_bytes
    self.store: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()
    self.bytes = 0
    self.hits = 0
    self.misses = 0
    self.evictions = 0
    self._fn = jax.jit(functools.partial(_features, lrf), compiler_options=lrf.compiler_options)

  @property
  def pooled(self) -> bool:
    return self.lrf.frozen_prefix == self.lrf.num_layers

  def fill(self, frozen, texts: dict[bytes, np.ndarray]):
    """Computes features for the texts (key -> ids) not cached yet."""
    todo: dict[int, list] = {}
    for k, ids in texts.items():
      if k in self.store:
        self.hits += 1
        self.store.move_to_end(k)
        continue
      self.misses += 1
      todo.setdefault(bucket_length(len(ids), self.buckets), []).append((k, ids))
    variables = {"params": frozen}
    for length, items in todo.items():
      for lo in range(0, len(items), self.batch_rows):
        chunk = items[lo:lo + self.batch_rows]
        tokens = np.full((self.batch_rows, length), self.lrf.pad_id, np.int32)
        mask = np.zeros_like(tokens)
        for r, (_, ids) in enumerate(chunk):
          tokens[r, :len(ids)] = ids
          mask[r, :len(ids)] = 1
        feats = np.asarray(self._fn(variables, tokens, mask))
        for r, (k, ids) in enumerate(chunk):
          self.store[k] = np.array(feats[r] if self.pooled else feats[r, :len(ids)])
          self.bytes += self.store[k].nbytes
    self._evict(texts)

  def _evict(self, keep) -> None:
    while self.bytes > self.max_bytes and self.store:
      oldest = next(iter(self.store))
      if oldest in keep:                  # the rest is this batch's: over the bound until next
        break
      self.bytes -= self.store.pop(oldest).nbytes
      self.evictions += 1

  def lookup(self, keys: np.ndarray, length: int) -> np.ndarray:
    """(..., H) or (..., length, H) features for an object array of keys."""
    sample = next(iter(self.store.values()))
    h = sample.shape[-1]
    shape = keys.shape + ((h,) if self.pooled else (length, h))
    out = np.zeros(shape, np.float32)
    for idx in np.ndindex(keys.shape):
      k = keys[idx]
      if k is None:
        continue
      f = self.store[k]
      if self.pooled:
        out[idx] = f
      else:
        out[idx][:len(f)] = f
    return out


def _features(lrf, variables, tokens, mask):
  return lrf.features(variables, tokens, mask).astype(np.float32)
