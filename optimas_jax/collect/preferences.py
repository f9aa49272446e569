"""Preference groups for one component, scored by Monte-Carlo rollouts.

For each recorded trace: re-sample the component n times on the same
upstream context (or run it under n variable values drawn from its search
space), dedupe the outputs, and score each candidate by the mean global
metric over m rollouts of everything downstream (`System.run_after`). All
examples x candidates x rollouts go through each component as one batch,
and every pair with distinct scores is kept (no positional rule).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from optimas_jax.collect.cache import RolloutCache, content_hash
from optimas_jax.core.keys import canonical_json
from optimas_jax.core.pairs import pair_indices
from optimas_jax.core import billing
from optimas_jax.system import (BatchRng, Hyperparameters, ModelChoice, Prompt, System,
                                SystemConfig, Trace, derive_seed)


@dataclasses.dataclass(frozen=True)
class PreferenceGroup:
  """One component input, its distinct candidate outputs and their scores."""

  component: str
  inputs: dict
  candidates: tuple[dict, ...]
  scores: tuple[float, ...]

  def pairs(self) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs: every ordered pair with a score gap (core/pairs.py)."""
    return pair_indices(self.scores)

  @property
  def num_pairs(self) -> int:
    return len(self.pairs())

  @property
  def mean_gap(self) -> float:
    gaps = [self.scores[i] - self.scores[j] for i, j in self.pairs()]
    return float(np.mean(gaps)) if gaps else 0.0

  def to_json(self) -> dict:
    return {"component": self.component, "inputs": self.inputs,
            "candidates": list(self.candidates), "scores": list(self.scores)}

  @classmethod
  def from_json(cls, d: dict) -> "PreferenceGroup":
    return cls(d["component"], d["inputs"], tuple(d["candidates"]), tuple(d["scores"]))


@dataclasses.dataclass
class CollectStats:
  examples: int = 0
  candidates: int = 0
  duplicates: int = 0
  failed_candidates: int = 0
  rollouts_run: int = 0
  rollouts_cached: int = 0
  failed_rollouts: int = 0
  groups: int = 0
  pairs: int = 0
  failed_proposals: int = 0          # propose() calls that raised (their batch counted above)
  last_proposal_error: str = ""


def _key(outputs: dict) -> str:
  return canonical_json(outputs)


def _jsonable(value: Any) -> bool:
  try:
    json.dumps(value)
    return True
  except TypeError:
    return False


class PreferenceCollector:
  """Collects preference groups for any component of `system`.

  Args:
    num_candidates: n, candidates per example (the recorded output counts).
    num_rollouts: m, Monte-Carlo rollouts per candidate (1 when nothing is
      downstream, where the metric is deterministic given the output).
    mode: "sample" re-samples the component under the current variable
      (its own randomness, e.g. LLM temperature); "space" draws variable
      values from the component's search space; "auto" picks "space" for
      hyperparameters and model choices, "sample" otherwise.
    seed: the run seed: "space" draws derive from (seed, round, component),
      so different seeds draw different candidates.
  """

  def __init__(self, system: System, num_candidates: int = 4, num_rollouts: int = 3,
               mode: str = "auto", cache: RolloutCache | None = None,
               prompt_hints: dict[str, Sequence[str]] | None = None, seed: int = 0):
    if num_candidates < 2:
      raise ValueError(f"num_candidates must be >= 2 to form pairs, got {num_candidates}")
    if num_rollouts < 1:
      raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")
    if mode not in ("auto", "sample", "space"):
      raise ValueError(f"mode={mode!r}: choose 'auto', 'sample' or 'space'")
    self.system = system
    self.num_candidates = num_candidates
    self.num_rollouts = num_rollouts
    self.mode = mode
    self.cache = cache
    self.prompt_hints = {k: tuple(v) for k, v in (prompt_hints or {}).items()}
    self.seed = seed

  def _mode(self, component: str) -> str:
    if self.mode != "auto":
      return self.mode
    comp = self.system.components[component]
    if isinstance(comp.variable, (Hyperparameters, ModelChoice)):
      return "space"
    if (isinstance(comp.variable, Prompt) and comp.deterministic
        and self.prompt_hints.get(component)):
      # A greedy LLM step re-samples to the same text: vary its prompt instead.
      return "space"
    return "sample"

  # ----------------------------------------------------------- candidates

  def _proposals(self, comp, inputs, variable, extra: int, rng, stats: CollectStats) -> list:
    """`comp.propose`'s alternatives per input, billed to the component; a proposer that
    raises (its LLM call, its parser) or answers for the wrong number of inputs gives no
    alternatives for the batch, counted as failed candidates: the collection goes on."""
    try:
      with billing.component(comp.name):
        proposals = list(comp.propose(inputs, variable, extra, rng))
      if len(proposals) != len(inputs):
        raise ValueError(f"{comp.name}.propose returned {len(proposals)} lists for "
                         f"{len(inputs)} inputs")
      return proposals
    except Exception as error:  # noqa: BLE001 - a component's own failure, counted
      stats.failed_candidates += len(inputs) * extra
      stats.failed_proposals += 1
      stats.last_proposal_error = f"{type(error).__name__}: {error}"[:300]
      self.system.counters.add(comp.name, failures=len(inputs))
      return [[] for _ in inputs]

  def candidates(self, component: str, traces: Sequence[Trace], config: SystemConfig,
                 round_id: str, stats: CollectStats) -> list[list[dict]]:
    """Distinct candidate outputs per trace; the recorded output comes first."""
    per_trace = [[t.steps[component].outputs] for t in traces]
    extra = self.num_candidates - 1
    spec = self.system.components[component].variable
    comp = self.system.components[component]
    if self._mode(component) == "sample" and comp.propose is not None:
      inputs = [t.steps[component].inputs for t in traces]
      rng = BatchRng(tuple(derive_seed(t.seed, component, round_id, "propose") for t in traces))
      # Each proposed alternative is one partial run of the component.
      self.system.pay_partial(len(traces) * extra)
      self.system.counters.add(component, calls=len(traces), batches=1)
      variable = config[component] if component in config else None
      for i, alts in enumerate(self._proposals(comp, inputs, variable, extra, rng, stats)):
        per_trace[i].extend(dict(a) for a in alts)
      runs = []
    elif self._mode(component) == "space":
      rng = np.random.default_rng(derive_seed(self.seed, round_id, component, "space"))
      values = _draw_values(spec, config[component], extra, rng,
                            self.prompt_hints.get(component, ()))
      runs = [(config.override(**{component: v}), f"{round_id}:v{i}") for i, v in enumerate(values)]
    else:
      # All re-samples of all traces go through the component as one batch.
      res = self.system.rerun([component], list(traces) * extra, config,
                              sample=[f"{round_id}:s{i}" for i in range(extra)
                                      for _ in traces])
      runs = []
      for n, t in enumerate(res.traces):
        if t.failed:
          stats.failed_candidates += 1
        else:
          per_trace[n % len(traces)].append(t.steps[component].outputs)
    for cfg, sample in runs:
      res = self.system.rerun([component], traces, cfg, sample=sample)
      for i, t in enumerate(res.traces):
        if t.failed:
          stats.failed_candidates += 1
        else:
          per_trace[i].append(t.steps[component].outputs)
    out = []
    for cands in per_trace:
      seen, kept = set(), []
      for c in cands:
        k = _key(c)
        if k in seen:
          stats.duplicates += 1
          continue
        seen.add(k)
        kept.append(c)
      out.append(kept)
    return out

  # -------------------------------------------------------------- scoring

  def score(self, component: str, traces: Sequence[Trace], candidates: list[list[dict]],
            config: SystemConfig, stats: CollectStats, round_index: int = 0) -> list[np.ndarray]:
    """Mean global metric of each candidate over m downstream rollouts."""
    downstream = self.system.downstream(component)[1:]
    stochastic = any(not self.system.components[n].deterministic for n in downstream)
    m = self.num_rollouts if stochastic else 1
    var_hashes = {n: config.variable_hash(n) for n in downstream if n in config}
    rerun = set(self.system.downstream(component))
    jobs, keys = [], []   # (trace index, candidate index, rollout index)
    for i, (t, cands) in enumerate(zip(traces, candidates)):
      for c, cand in enumerate(cands):
        for j in range(m):
          jobs.append((i, c, j))
          keys.append(content_hash(component, var_hashes, t.seed, t.example,
                                   _fixed_context(self.system, t, rerun), _key(cand), j))
    cached = self.cache.get_many("rollout", keys) if self.cache is not None else {}
    todo = [n for n, k in enumerate(keys) if k not in cached]
    stats.rollouts_cached += len(jobs) - len(todo)
    if len(jobs) > len(todo):
      self.system.counters.add(component, cache_hits=len(jobs) - len(todo))
    values = {keys[n]: cached[keys[n]] for n in range(len(jobs)) if keys[n] in cached}
    if todo:
      batch = [traces[jobs[n][0]].with_outputs(component, candidates[jobs[n][0]][jobs[n][1]])
               for n in todo]
      res = self.system.rerun(downstream, batch, config, sample=[f"mc{jobs[n][2]}" for n in todo])
      scores = self.system.evaluate([t.example for t in res.traces], res)
      fresh = {keys[n]: float(s) for n, s in zip(todo, scores)}
      stats.rollouts_run += len(todo)
      stats.failed_rollouts += res.num_failed
      values.update(fresh)
      if self.cache is not None and all(_jsonable(traces[jobs[n][0]].example) for n in todo):
        self.cache.put_many("rollout", fresh, round_index)
    totals = [np.zeros(len(c)) for c in candidates]
    for (i, c, _), k in zip(jobs, keys):
      totals[i][c] += values[k]
    return [tot / m for tot in totals]

  # -------------------------------------------------------------- collect

  def collect(self, component: str, traces: Sequence[Trace], config: SystemConfig,
              round_id: str, round_index: int = 0) -> tuple[list[PreferenceGroup], CollectStats]:
    """Preference groups of `component` on the traces where it ran.

    `round_index` tags the rollouts this call caches (the loop's 0 for the
    initial collection, iteration + 1 after), so a resumed run can forget
    what an interrupted round cached.
    """
    stats = CollectStats()
    usable = [t for t in traces if component in t.steps]
    stats.examples = len(usable)
    if not usable:
      return [], stats
    cands = self.candidates(component, usable, config, round_id, stats)
    scores = self.score(component, usable, cands, config, stats, round_index)
    groups = []
    for t, cs, sc in zip(usable, cands, scores):
      stats.candidates += len(cs)
      g = PreferenceGroup(component, dict(t.steps[component].inputs), tuple(cs),
                          tuple(float(x) for x in sc))
      if g.num_pairs:
        groups.append(g)
        stats.pairs += g.num_pairs
    stats.groups = len(groups)
    return groups, stats


def _fixed_context(system: System, trace: Trace, rerun: set[str]) -> dict:
  """The fields a rollout reads but does not recompute (inputs, upstream, branches)."""
  return {k: _key(v) for k, v in trace.context().items() if system.producer.get(k) not in rerun}


def _draw_values(spec, current, count: int, rng: np.random.Generator,
                 hints: Sequence[str] = ()) -> list:
  """Up to `count` distinct variable values other than `current`.

  A prompt's values are the current prompt with one of `hints` appended.
  """
  if isinstance(spec, Prompt):
    others = [f"{current} {h}" for h in hints if h not in current]
    return [others[i] for i in rng.permutation(len(others))[:count]]
  if isinstance(spec, ModelChoice):
    others = [o for o in spec.options if o != current]
    return [others[i] for i in rng.permutation(len(others))[:count]]
  grid = spec.grid()
  if grid is not None:
    others = [g for g in grid if g != current]
    return [others[i] for i in rng.permutation(len(others))[:count]]
  seen, out = {_key(current)}, []
  for _ in range(20 * count):
    v = spec.sample(rng)
    if _key(v) not in seen:
      seen.add(_key(v))
      out.append(v)
    if len(out) == count:
      break
  return out
