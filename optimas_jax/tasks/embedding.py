"""MiniLM sentence embeddings with an in-memory and an on-disk cache.

Task systems embed the same titles, passages and questions many times (every
rollout re-runs the components); each distinct text is encoded once per
process, and a corpus known up front is encoded once per machine.
"""

from __future__ import annotations

import hashlib
import pathlib
import threading
from typing import Sequence

import numpy as np

DIM = 384
_PAD_ROWS = 32   # batches padded to a multiple: one compiled shape per length bucket


class Embedder:
  """`embed(texts) -> (N, 384)` normalized MiniLM vectors, cached by text."""

  def __init__(self, backbone=None, cache_dir: str | None = None):
    if backbone is None:
      from optimas_jax.models import registry
      backbone = registry.load_backbone("minilm")
    self.backbone = backbone
    self.cache_dir = pathlib.Path(cache_dir) if cache_dir else None
    self._vectors: dict[str, np.ndarray] = {}
    self._lock = threading.Lock()   # components may run from worker threads

  def _encode(self, texts: list[str]) -> np.ndarray:
    from optimas_jax.models import bert
    padded = texts + [""] * (-len(texts) % _PAD_ROWS)
    vecs = bert.encode_sentences(self.backbone.module, self.backbone.params,
                                 self.backbone.tokenizer, padded, batch_size=_PAD_ROWS)
    return np.asarray(vecs[: len(texts)], np.float32)

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    texts = list(texts)
    with self._lock:
      missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
      if missing:
        self._vectors.update(zip(missing, self._encode(missing)))
      if not texts:
        return np.zeros((0, DIM), np.float32)
      return np.stack([self._vectors[t] for t in texts])

  def preload(self, texts: Sequence[str], name: str) -> None:
    """Encodes a known corpus once, reading/writing `<cache_dir>/<name>-<hash>.npy`."""
    texts = list(dict.fromkeys(texts))
    digest = hashlib.blake2b("\n".join(texts).encode(), digest_size=8).hexdigest()
    path = self.cache_dir / f"{name}-{digest}.npy" if self.cache_dir else None
    if path is not None and path.exists():
      vecs = np.load(path)
    else:
      vecs = self._encode(texts) if texts else np.zeros((0, DIM), np.float32)
      if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vecs)
        tmp.replace(path)   # atomic: a crash never leaves a half-written cache
    with self._lock:
      self._vectors.update(zip(texts, vecs))
