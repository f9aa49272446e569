"""Preference groups: one component input, its candidate outputs, their scores."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from optimas_jax.core import pairs
from optimas_jax.lrf.text import TextEncoder, text_key

Fields = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Group:
  """n candidate outputs of component `component` on one input."""
  component: int
  inputs: Fields
  outputs: tuple[Fields, ...]
  scores: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class EncodedGroup:
  """A group as token ids, deduplicated; `keys` hash each candidate text."""
  component: int
  ids: tuple[np.ndarray, ...]
  scores: np.ndarray
  keys: tuple[bytes, ...]

  @property
  def length(self) -> int:
    return max(len(i) for i in self.ids)

  def num_pairs(self) -> int:
    return pairs.num_pairs(self.scores)


def groups_from_pairs(rows) -> list[Group]:
  """Reference-style rows (component, inputs, chosen, rejected) -> groups of 2."""
  return [Group(c, tuple(i), (tuple(ch), tuple(rj)), (1.0, 0.0))
          for c, i, ch, rj in rows]


def encode_groups(groups: Sequence[Group], encoder: TextEncoder,
                  max_candidates: int, stats=None) -> list[EncodedGroup]:
  """Tokenize, merge candidates whose texts coincide, drop pairless groups.

  No group is dropped for length: the encoder shortens inputs and, as a last
  resort, cuts an over-long output from the middle (counted in its stats).

  Candidates that tokenize to the same ids (e.g. equal outputs) are merged
  with their mean score: as separate rows they would form a pair the LRF
  can never order. Groups over `max_candidates` keep candidates spread
  evenly over the score ranking.
  """
  stats = encoder.stats if stats is None else stats
  out = []
  for g in groups:
    by_key: dict[bytes, list] = {}
    encoded = [encoder.encode(g.component, g.inputs, o) for o in g.outputs]
    for ids, score in zip(encoded, g.scores):
      k = text_key(ids)
      if k in by_key:
        stats["merged_candidates"] += 1
        by_key[k][1].append(float(score))
      else:
        by_key[k] = [ids, [float(score)]]
    items = [(k, ids, float(np.mean(s))) for k, (ids, s) in by_key.items()]
    if len(items) > max_candidates:
      stats["dropped_candidates"] += len(items) - max_candidates
      items.sort(key=lambda t: -t[2])
      pick = np.linspace(0, len(items) - 1, max_candidates).round().astype(int)
      items = [items[i] for i in pick]
    eg = EncodedGroup(g.component, tuple(t[1] for t in items),
                      np.asarray([t[2] for t in items], np.float32),
                      tuple(t[0] for t in items))
    if len(items) < 2 or eg.num_pairs() == 0:
      stats["pairless_groups"] += 1
      continue
    out.append(eg)
  return out


def split_groups(groups: Sequence, eval_fraction: float, seed: int):
  """Held-out split by group (never by pair: pairs of a group share an input)."""
  idx = np.random.default_rng(seed).permutation(len(groups))
  n_eval = int(round(len(groups) * eval_fraction))
  return [groups[i] for i in idx[n_eval:]], [groups[i] for i in idx[:n_eval]]
