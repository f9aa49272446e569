"""Hyperparameter and model-choice search against a local reward.

`evaluate(values) -> mean local reward per value` is supplied by the loop
(it runs the component on its recorded inputs under each value and scores
the outputs with the component's LRF). Small spaces are searched
exhaustively; large ones by random search followed by local moves around
the best point (one dimension changed at a time).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from optimas_jax.core.keys import canonical_json
from optimas_jax.system import Choice, FloatRange, Hyperparameters, IntRange, ModelChoice


@dataclasses.dataclass
class SearchResult:
  best: Any
  best_score: float
  table: list[tuple[Any, float]]   # every value tried, with its score


def _key(v) -> str:
  return canonical_json(v)


def _neighbours(spec: Hyperparameters, point: dict, rng: np.random.Generator) -> list[dict]:
  out = []
  for name, space in spec.space.items():
    if isinstance(space, Choice):
      out += [{**point, name: o} for o in space.options if o != point[name]]
    elif isinstance(space, IntRange):
      out += [{**point, name: v} for v in (point[name] - 1, point[name] + 1) if space.contains(v)]
    elif isinstance(space, FloatRange):
      for f in (0.5, 2.0) if space.log else (-0.1, 0.1):
        v = point[name] * f if space.log else point[name] + f * (space.high - space.low)
        v = float(np.clip(v, space.low, space.high))
        if v != point[name]:
          out.append({**point, name: v})
  return [out[i] for i in rng.permutation(len(out))]


def search(spec, current, evaluate: Callable[[Sequence[Any]], np.ndarray], budget: int,
           rng: np.random.Generator) -> SearchResult:
  """Best value of a Hyperparameters / ModelChoice variable within `budget` evaluations.

  The incumbent is always evaluated, so the result is never worse than it
  under the local reward.
  """
  if budget < 1:
    raise ValueError(f"search budget must be >= 1, got {budget}")
  if isinstance(spec, ModelChoice):
    space = list(spec.options)
  elif isinstance(spec, Hyperparameters):
    space = spec.grid()
  else:
    raise TypeError(f"search() handles hyperparameters and model choices, not {spec.kind}")
  tried: dict[str, tuple[Any, float]] = {}

  def run(values):
    values = [v for v in values if _key(v) not in tried]
    values = list({_key(v): v for v in values}.values())[: budget - len(tried)]
    if values:
      for v, s in zip(values, np.asarray(evaluate(values), dtype=np.float64)):
        tried[_key(v)] = (v, float(s))

  if space is not None and len(space) <= budget:
    run([current] + [v for v in space if _key(v) != _key(current)])
  else:
    initial = [current]
    if space is not None:
      initial += [space[i] for i in rng.permutation(len(space))[: max(budget // 2, 1)]]
    else:
      initial += [spec.sample(rng) for _ in range(max(budget // 2, 1))]
    run(initial)
    while len(tried) < budget and isinstance(spec, Hyperparameters):
      best = max(tried.values(), key=lambda t: t[1])[0]
      moves = [m for m in _neighbours(spec, best, rng) if _key(m) not in tried]
      if not moves:
        break
      run(moves[: budget - len(tried)])
  table = list(tried.values())
  best, best_score = max(table, key=lambda t: t[1])
  return SearchResult(best, best_score, table)
