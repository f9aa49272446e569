"""The validation gate: keep a change only if it beats the incumbent, paired.

With 15-20 validation items one item is 5-7 points, so "the mean went up"
accepts lucky changes. The gate compares the candidate and the incumbent on
the SAME validation examples (same seeds), per example, and accepts only
when the paired improvement is both at least `min_gain` on average and
unlikely to be chance at `confidence`:

- "paired_bootstrap": resample the examples' paired differences; accept
  when the (1 - confidence) quantile of the resampled mean is above 0.
- "sign": one-sided sign test on wins vs losses (ties dropped); accept when
  its p-value is at most 1 - confidence.
- "mean": the plain rule (mean difference >= min_gain), for ablations.

A pure function of its arrays and seed: the loop logs every decision.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TESTS = ("paired_bootstrap", "sign", "mean")


@dataclasses.dataclass(frozen=True)
class GateDecision:
  accepted: bool
  test: str
  mean_difference: float      # candidate - incumbent, averaged over examples
  lower: float                # one-sided bounds of the mean difference at `confidence`
  upper: float                # (bootstrap quantiles; the sample mean for other tests)
  p_value: float              # chance of an improvement this large if there is none
  wins: int
  losses: int
  ties: int

  def as_record(self) -> dict:
    return dataclasses.asdict(self)


def decide(incumbent: np.ndarray, candidate: np.ndarray, *, test: str = "paired_bootstrap",
           confidence: float = 0.9, min_gain: float = 1e-9, resamples: int = 2000,
           seed: int = 0) -> GateDecision:
  """Whether `candidate` (per-example scores) replaces `incumbent` (same examples)."""
  if test not in TESTS:
    raise ValueError(f"config.loop.gate={test!r}: choose one of {TESTS}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"config.loop.gate_confidence={confidence}: use a value in (0, 1), e.g. 0.9")
  incumbent = np.asarray(incumbent, np.float64)
  candidate = np.asarray(candidate, np.float64)
  if incumbent.shape != candidate.shape or incumbent.ndim != 1 or not len(incumbent):
    raise ValueError(f"the gate needs paired per-example scores of one shape, got "
                     f"{incumbent.shape} and {candidate.shape}")
  diffs = candidate - incumbent
  mean = float(diffs.mean())
  wins, losses = int((diffs > 0).sum()), int((diffs < 0).sum())
  ties = len(diffs) - wins - losses
  lower = upper = mean
  if test == "paired_bootstrap":
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    lower = float(np.quantile(means, 1.0 - confidence))
    upper = float(np.quantile(means, confidence))
    p_value = float(np.mean(means <= 0.0))
    significant = lower > 0.0
  elif test == "sign":
    n = wins + losses
    p_value = (sum(math.comb(n, k) for k in range(wins, n + 1)) / 2.0 ** n) if n else 1.0
    significant = p_value <= 1.0 - confidence
  else:
    p_value = float("nan")
    significant = True
  accepted = bool(significant and mean >= min_gain)
  return GateDecision(accepted, test, mean, lower, upper, p_value, wins, losses, ties)
