"""Batched, jitted LRF scoring for the optimizers, cached per (version, text).

Triples (component, inputs, outputs) are tokenized through the same
TextEncoder as training, sorted into length buckets and scored in fixed
(batch_rows, bucket) shapes, so any number of triples reuses a few
compiled programs. A score is cached under (LRF version, component, text
hash); bump the version (e.g. the train step) whenever the params change.
Given the trainer's ActivationCache (frozen lower layers), only the
trainable top runs per version: the lower-layer activations of a text are
computed once and shared with training.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np

from optimas_jax.lrf.buckets import bucket_length
from optimas_jax.lrf.text import TextEncoder, text_key


class Scorer:

  def __init__(self, lrf, encoder: TextEncoder, buckets: Sequence[int],
               batch_rows: int = 64, activations=None):
    self.lrf, self.encoder = lrf, encoder
    self.activations = activations      # lrf.cache.ActivationCache or None
    self._frozen = None
    self._fn_cached = jax.jit(functools.partial(_score_features, lrf),
                              compiler_options=lrf.compiler_options)
    self.buckets, self.batch_rows = tuple(buckets), batch_rows
    self.cache: dict[tuple, float] = {}
    self.hits = self.misses = 0
    self.version = None
    self._variables = None
    self._fn = jax.jit(functools.partial(_score, lrf), compiler_options=lrf.compiler_options)

  def update(self, trainable, frozen, version: int):
    """New params; scores cached under older versions stop matching."""
    self._variables = self.lrf.merge(trainable, frozen)
    self._frozen = frozen
    if version != self.version:
      # Old entries can never hit again; drop them to bound memory.
      self.cache = {k: v for k, v in self.cache.items() if k[0] == version}
    self.version = version

  def score(self, triples) -> np.ndarray:
    """(len(triples),) float32 rewards."""
    if self._variables is None:
      raise RuntimeError("Scorer.update(trainable, frozen, version) first")
    keys, todo, pending = [], {}, set()
    for comp, inputs, outputs in triples:
      ids = self.encoder.encode(comp, inputs, outputs)
      key = (self.version, int(comp), text_key(ids))
      keys.append(key)
      if key in self.cache or key in pending:
        self.hits += 1
        continue
      self.misses += 1
      pending.add(key)
      todo.setdefault(bucket_length(len(ids), self.buckets), []).append(
          (key, ids, int(comp)))
    if self.activations is not None and todo:
      self.activations.fill(self._frozen, {k[2]: ids for items in todo.values()
                                           for k, ids, _ in items})
    for length, items in sorted(todo.items()):
      for lo in range(0, len(items), self.batch_rows):
        chunk = items[lo:lo + self.batch_rows]
        tokens = np.full((self.batch_rows, length), self.lrf.pad_id, np.int32)
        mask = np.zeros_like(tokens)
        comps = np.zeros((self.batch_rows,), np.int32)
        for r, (_, ids, c) in enumerate(chunk):
          tokens[r, :len(ids)], mask[r, :len(ids)], comps[r] = ids, 1, c
        if self.activations is None:
          out = np.asarray(self._fn(self._variables, tokens, mask, comps))
        else:
          text_keys = np.full((self.batch_rows,), None, object)
          text_keys[:len(chunk)] = [k[2] for k, _, _ in chunk]
          feats = self.activations.lookup(text_keys, length)
          feats = ({"pooled": feats} if self.activations.pooled
                   else {"hidden": feats, "mask": mask})
          out = np.asarray(self._fn_cached(self._variables, feats, comps))
        for r, (k, _, _) in enumerate(chunk):
          self.cache[k] = float(out[r])
    return np.asarray([self.cache[k] for k in keys], np.float32)


def _score(lrf, variables, tokens, mask, comps):
  return lrf.score(variables, tokens, comps, mask)


def _score_features(lrf, variables, feats, comps):
  return lrf.rewards(variables, feats, comps)
