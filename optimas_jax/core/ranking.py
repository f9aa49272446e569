"""The deployed ranking of a ranking policy (tasks run it; optimize trains it)."""

import numpy as np


def greedy_ordering(logits: np.ndarray, mask: np.ndarray, picks: int) -> np.ndarray:
  """(B, picks) the deployed ranking: options by score, best first (stable)."""
  scores = np.where(mask, np.asarray(logits), -np.inf)
  return np.argsort(-scores, axis=-1, kind="stable")[:, :picks]
