"""What a preference pair is: candidate i beats j when s_i - s_j > MIN_GAP.

Collection (collect/preferences.py), encoding (lrf/data.py), the loss
(lrf/loss.py) and its config default read this one threshold, so the pairs
counted when collecting are exactly the pairs the loss trains on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_GAP = 1e-6


def pair_indices(scores: Sequence[float], min_gap: float = MIN_GAP) -> list[tuple[int, int]]:
  """(chosen, rejected) index pairs: every ordered pair whose scores differ by > min_gap."""
  s = list(scores)
  return [(i, j) for i in range(len(s)) for j in range(len(s)) if s[i] - s[j] > min_gap]


def num_pairs(scores, min_gap: float = MIN_GAP) -> int:
  s = np.asarray(scores, np.float64)
  return int(np.sum(s[:, None] - s[None, :] > min_gap))
