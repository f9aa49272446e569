"""Length buckets and fixed-shape batches (a few shapes, no per-step recompiles).

A step holds `accum x micro` groups from one length bucket, padded to
`max_candidates` candidates and to the bucket length; padding groups and
candidates are marked invalid. Arrays are (A, G, N, ...) so the group axis
shards over devices and the accumulation axis is scanned.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

from optimas_jax.lrf.data import EncodedGroup


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  i = bisect.bisect_left(list(buckets), length)
  if i == len(buckets):
    raise ValueError(f"length {length} > largest bucket {buckets[-1]}; "
                     "config.lrf.buckets must end at config.lrf.max_len")
  return buckets[i]


def plan_epoch(groups: Sequence[EncodedGroup], buckets: Sequence[int],
               groups_per_step: int, seed: int, epoch: int,
               shuffle: bool = True) -> list[tuple[int, list[int]]]:
  """[(bucket_len, group indices)] for one epoch; deterministic in (seed, epoch).

  The number of steps depends only on the bucket sizes, so a resumed run
  knows where it is from the step count alone.
  """
  rng = np.random.default_rng([seed, epoch])
  by_bucket: dict[int, list[int]] = {}
  for i, g in enumerate(groups):
    by_bucket.setdefault(bucket_length(g.length, buckets), []).append(i)
  steps = []
  for b in sorted(by_bucket):
    idx = np.asarray(by_bucket[b])
    if shuffle:
      idx = rng.permutation(idx)
    steps += [(b, idx[i:i + groups_per_step].tolist())
              for i in range(0, len(idx), groups_per_step)]
  if shuffle:
    steps = [steps[i] for i in rng.permutation(len(steps))]
  return steps


def collate(groups: Sequence[EncodedGroup], idxs: Sequence[int], length: int,
            accum: int, micro: int, max_candidates: int, pad_id: int):
  """Host arrays for one step, plus text keys (A, G, N) for activation caches."""
  a, g, n = accum, micro, max_candidates
  tokens = np.full((a * g, n, length), pad_id, np.int32)
  mask = np.zeros((a * g, n, length), np.int32)
  mc = np.zeros((a * g, n), np.float32)
  valid = np.zeros((a * g, n), bool)
  comp = np.zeros((a * g,), np.int32)
  keys = np.full((a * g, n), None, object)
  if len(idxs) > a * g:
    raise ValueError(f"{len(idxs)} groups > accum*micro = {a * g}")
  for row, gi in enumerate(idxs):
    grp = groups[gi]
    if len(grp.ids) > n:
      raise ValueError(f"group with {len(grp.ids)} candidates > "
                       f"config.lrf.max_candidates={n}; raise it")
    comp[row] = grp.component
    for c, ids in enumerate(grp.ids):
      tokens[row, c, :len(ids)] = ids
      mask[row, c, :len(ids)] = 1
      mc[row, c] = grp.scores[c]
      valid[row, c] = True
      keys[row, c] = grp.keys[c]
  shape = lambda x: x.reshape((a, g) + x.shape[1:])
  batch = dict(tokens=shape(tokens), mask=shape(mask), mc=shape(mc),
               valid=shape(valid), component=shape(comp))
  return batch, shape(keys)
