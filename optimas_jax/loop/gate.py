"""The validation gate: keep a change only if it beats the incumbent, paired, at a level that
holds over the whole run.

With 15-20 validation items one item is 5-7 points, so "the mean went up"
accepts lucky changes. The gate compares the candidate and the incumbent on
the SAME validation examples (same seeds), per example, and accepts only
when the paired improvement is at least `min_gain` on average and the
one-sided test rejects "no better" at this gate's level `alpha`:

- "exact" (default): the exact one-sided paired sign-flip permutation test
  of the mean difference; with 0/1 scores it is the exact sign test.
  Exact by enumeration up to 16 non-zero differences of unequal sizes (any
  number when they are all of one size: the sign test), else estimated from
  2^16 random sign flips with the (k + 1) / (R + 1) correction.
- "sign": the exact one-sided sign test on wins vs losses (ties dropped).
- "paired_bootstrap": accept when the (1 - confidence) quantile of the
  resampled mean difference is above 0. Its `tail_share` (resampled means
  <= 0) is not a p-value and is not reported as one; at 16 items with few
  non-ties it is anti-conservative (BUILD.md).
- "mean": the plain rule (mean difference >= min_gain), for ablations.

The level of one gate comes from `level()`: a run spends its error
alpha = `1 - confidence` across its gates. "series" (default): alpha / (k (k + 1))
at the k-th gate, which sums to alpha however many gates a run makes, so
every arm of a comparison (budget-capped arms make an unknown number) uses
one rule; "bonferroni": alpha / K for a run planned for K iterations (only
for runs whose number of gates is fixed in advance); "none": alpha at every
gate. With spending, the chance that a run keeps any change that is no
better is at most `1 - confidence`.

Pure functions of their arrays and seed: the loop logs every decision.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

TESTS = ("exact", "sign", "paired_bootstrap", "mean")
SPENDING = ("series", "bonferroni", "none")
EXACT_MAX_NONZERO = 16                 # 2^16 sign flips enumerated; beyond, sampled
SAMPLED_FLIPS = 1 << 16


@dataclasses.dataclass(frozen=True)
class GateDecision:
  accepted: bool
  test: str
  alpha: float                # the level this gate tested at (after spending)
  mean_difference: float      # candidate - incumbent, averaged over examples
  lower: float                # bootstrap: one-sided quantiles of the mean difference;
  upper: float                # other tests: the sample mean
  p_value: float | None       # the named test's one-sided p-value (None: bootstrap, mean)
  tail_share: float | None    # bootstrap only: share of resampled means <= 0
  exact: bool                 # p_value by enumeration (not sampled)
  wins: int
  losses: int
  ties: int

  def as_record(self) -> dict:
    return dataclasses.asdict(self)


def level(confidence: float, spending: str, gate_index: int, planned_gates: int) -> float:
  """The level of the `gate_index`-th gate (1-based) of a run planned for `planned_gates`."""
  if spending not in SPENDING:
    raise ValueError(f"config.loop.gate_spending={spending!r}: choose one of {SPENDING}")
  if gate_index < 1:
    raise ValueError(f"gate_index={gate_index}: gates count from 1")
  alpha = 1.0 - confidence
  if spending == "bonferroni":
    return alpha / max(planned_gates, gate_index, 1)
  if spending == "series":
    return alpha / (gate_index * (gate_index + 1))
  return alpha


def sign_test_p(wins: int, losses: int) -> float:
  """P(at least `wins` of wins + losses fair coin flips come up heads)."""
  n = wins + losses
  return (sum(math.comb(n, k) for k in range(wins, n + 1)) / 2.0 ** n) if n else 1.0


def permutation_p(diffs: np.ndarray, seed: int = 0) -> tuple[float, bool]:
  """One-sided paired sign-flip p-value of mean(diffs) > 0, and whether it is exact."""
  nonzero = diffs[diffs != 0]
  n = len(nonzero)
  if n == 0:
    return 1.0, True
  if np.allclose(np.abs(nonzero), abs(nonzero[0])):      # one size: the exact sign test
    return sign_test_p(int((nonzero > 0).sum()), int((nonzero < 0).sum())), True
  observed = nonzero.sum()
  tolerance = 1e-12 * max(1.0, float(np.abs(nonzero).sum()))
  if n <= EXACT_MAX_NONZERO:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    sums = signs @ nonzero
    return float(np.mean(sums >= observed - tolerance)), True
  rng = np.random.default_rng(seed)
  signs = rng.choice((1.0, -1.0), size=(SAMPLED_FLIPS, n))
  count = int(np.sum(signs @ nonzero >= observed - tolerance))
  return (count + 1) / (SAMPLED_FLIPS + 1), False


def decide(incumbent: np.ndarray, candidate: np.ndarray, *, test: str = "exact",
           confidence: float = 0.9, alpha: float | None = None, min_gain: float = 1e-9,
           resamples: int = 2000, seed: int = 0) -> GateDecision:
  """Whether `candidate` (per-example scores) replaces `incumbent` (same examples).

  `alpha` is this gate's level (default 1 - confidence, one gate alone); the
  bootstrap's interval is taken at 1 - alpha too."""
  if test not in TESTS:
    raise ValueError(f"config.loop.gate={test!r}: choose one of {TESTS}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"config.loop.gate_confidence={confidence}: use a value in (0, 1), e.g. 0.9")
  alpha = 1.0 - confidence if alpha is None else float(alpha)
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
  p_value = tail_share = None
  exact = True
  if test == "paired_bootstrap":
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    lower = float(np.quantile(means, alpha))
    upper = float(np.quantile(means, 1.0 - alpha))
    tail_share = float(np.mean(means <= 0.0))
    exact = False
    significant = lower > 0.0
  elif test == "sign":
    p_value = sign_test_p(wins, losses)
    significant = p_value <= alpha
  elif test == "exact":
    p_value, exact = permutation_p(diffs, seed)
    significant = p_value <= alpha
  else:
    significant = True
  accepted = bool(significant and mean >= min_gain)
  return GateDecision(accepted, test, alpha, mean, lower, upper, p_value, tail_share, exact,
                      wins, losses, ties)
