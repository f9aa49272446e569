"""Grouped Bradley-Terry loss over candidate groups.

A group is one component input with n candidate outputs and their
Monte-Carlo scores. Each candidate is encoded once; every ordered pair
(i, j) with s_i - s_j > min_gap contributes -log sigmoid(r_i - r_j - margin).
A group of 4 candidates with distinct scores gives 6 pairs from 4 encodes,
where the flat (chosen, rejected) design needs 12.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optimas_jax.core.pairs import MIN_GAP


def pair_mask(mc, valid, min_gap):
  """(G, N, N) bool: pair (i, j) counts when i beats j by more than min_gap."""
  gap = mc[:, :, None] - mc[:, None, :]
  both = valid[:, :, None] & valid[:, None, :]
  return both & (gap > min_gap), gap


def pair_weights(gap, mask, min_weight):
  """Per-pair weights in [min_weight, 1], never 0 or NaN.

  Linear in the score gap relative to the largest gap in the batch; the
  reference's min-max scaling gave 0 to the smallest gap and NaN (0/0) when
  all gaps were equal.
  """
  gap = jnp.where(mask, gap, 0.0)
  max_gap = jnp.max(gap)
  scale = jnp.where(max_gap > 0, max_gap, 1.0)
  w = min_weight + (1.0 - min_weight) * gap / scale
  return jnp.where(mask, w, 0.0)


def grouped_bt(r, mc, valid, *, min_gap=MIN_GAP, margin=0.0, gap_weighting=False,
               min_weight=0.1):
  """Masked (weighted) mean BT loss; 0, not NaN, when no pair is valid.

  Args:
    r: (G, N) LRF scores.
    mc: (G, N) Monte-Carlo scores (targets; no gradient).
    valid: (G, N) bool, False for padding candidates / groups.
  Returns:
    (loss, aux) with aux holding per-pair arrays for metrics.
  """
  mc = jax.lax.stop_gradient(mc.astype(jnp.float32))
  r = r.astype(jnp.float32)
  mask, gap = pair_mask(mc, valid, min_gap)
  diff = r[:, :, None] - r[:, None, :]
  nll = -jax.nn.log_sigmoid(diff - margin)
  if gap_weighting:
    w = pair_weights(gap, mask, min_weight)
  else:
    w = mask.astype(jnp.float32)
  w = jax.lax.stop_gradient(w)
  denom = jnp.sum(w)
  # where() on both branches keeps the gradient finite when denom == 0.
  loss = jnp.where(denom > 0, jnp.sum(w * jnp.where(mask, nll, 0.0)) /
                   jnp.where(denom > 0, denom, 1.0), 0.0)
  aux = dict(mask=mask, nll=nll, diff=diff, denom=denom)
  return loss, aux


def pair_stats(aux, component_ids, num_components):
  """Per-component sums: pairs, correct (r_i > r_j strictly), nll, gap."""
  mask = aux["mask"].astype(jnp.float32)
  per_group = dict(
      pairs=mask.sum((1, 2)),
      correct=(mask * (aux["diff"] > 0)).sum((1, 2)),
      nll=(mask * jnp.where(aux["mask"], aux["nll"], 0.0)).sum((1, 2)),
      gap=(mask * jnp.where(aux["mask"], aux["diff"], 0.0)).sum((1, 2)),
  )
  return {k: jax.ops.segment_sum(v, component_ids, num_components)
          for k, v in per_group.items()}


def group_kendall_sums(r, mc, valid, component_ids, num_components,
                       min_gap=MIN_GAP):
  """Per-component (concordant - discordant, pairs) over within-group pairs.

  Kendall tau-a restricted to pairs inside a group, since Monte-Carlo scores
  of different component inputs are not comparable. Ties in r count as 0.
  """
  mask, _ = pair_mask(mc, valid, min_gap)
  diff = r[:, :, None] - r[:, None, :]
  sign = jnp.sign(diff) * mask
  return (jax.ops.segment_sum(sign.sum((1, 2)), component_ids, num_components),
          jax.ops.segment_sum(mask.sum((1, 2)).astype(jnp.float32),
                              component_ids, num_components))


def flat_pairs_to_groups(chosen, rejected):
  """Reference-style (chosen, rejected) rows -> groups of 2.

  Returns (tokens (P, 2, ...), mc (P, 2), valid (P, 2)). Chosen gets score 1.
  """
  tokens = jnp.stack([chosen, rejected], axis=1)
  p = tokens.shape[0]
  mc = jnp.tile(jnp.array([1.0, 0.0]), (p, 1))
  return tokens, mc, jnp.ones((p, 2), bool)
