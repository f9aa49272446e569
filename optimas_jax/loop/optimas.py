"""Algorithm 1 of the Optimas paper and its ablations: one Method, four variants.

Per iteration: pick a component; (online LRF) collect fresh preference pairs
and adapt its LRF; optimize the component locally against its objective;
keep the change only if the paired validation gate accepts it. A variant is
two choices made once, at start-up:

  scoring     what scores a local step's candidates: "lrf" (the local reward
              function), "metric" (the true metric on training traces), or
              "" (no local step: the initial configuration is evaluated)
  lrf_update  how the LRF learns: "online" (initial pairs, then fresh pairs and
              a head update every iteration), "static" (initial pairs only),
              "none" (no LRF)

  optimas         lrf     online
  optimas_static  lrf     static
  coordinate      metric  none
  unoptimized     -       none

Every iteration's randomness derives from (seed, iteration); the state is
checkpointed after each iteration; a re-run of the same command resumes from
the workdir and ends where an uninterrupted run would, with the same budget.
The budget, evaluation and summary are the Harness's (loop/harness.py).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from optimas_jax import checkpoint
from optimas_jax.collect.cache import RolloutCache
from optimas_jax.collect.preferences import PreferenceCollector
from optimas_jax.collect.replay import ReplayBuffer
from optimas_jax.core.mesh import is_writer
from optimas_jax.loop import gate as gate_lib
from optimas_jax.loop.harness import Harness, Outcome
from optimas_jax.loop.objectives import LrfObjective, MetricObjective
from optimas_jax.loop.state import LoopState
from optimas_jax.optimize import prompt as prompt_lib
from optimas_jax.optimize import search as search_lib
from optimas_jax.optimize.select import ComponentSelector
from optimas_jax.system import (BudgetSpent, Hyperparameters, ModelChoice, ModelParameters,
                                Prompt, SystemConfig, derive_seed)

SCORINGS = ("lrf", "metric", "")
LRF_UPDATES = ("online", "static", "none")


def _round_index(iteration: int | None) -> int:
  """Rollout-cache round of the initial collection (0) or of an iteration (it + 1)."""
  return 0 if iteration is None else iteration + 1


# ------------------------------------------------------------------ the LRF's life


class NoLrf:
  """No local reward function: nothing collected, trained or checkpointed."""

  rewards = None

  def __init__(self, loop: "OptimasRun"):
    del loop

  def initialize(self, record: dict) -> None:
    del record

  def iteration(self, component, traces, iteration, rng) -> dict:
    del component, traces, iteration, rng
    return {}

  def arrays(self) -> dict:
    return {}

  def meta(self) -> dict:
    return {}

  def restore(self, arrays: dict, meta: dict) -> None:
    del arrays, meta

  def text_stats(self) -> dict | None:
    return None

  def record_stats(self, record: dict) -> None:
    del record


class TrainedLrf(NoLrf):
  """An LRF trained on initial preference pairs; `online` adapts one head per iteration."""

  def __init__(self, loop: "OptimasRun", online: bool):
    from optimas_jax.lrf.rewards import LocalRewards   # loads the backbone
    self.loop, self.online = loop, online
    system, config = loop.system, loop.config
    components = [(n, system.components[n].description) for n in loop.specs]
    self.rewards = LocalRewards(config.lrf, components,
                                derive_seed(loop.seed, "lrf") & 0x7FFFFFFF)

  def initialize(self, record: dict) -> None:
    loop, config = self.loop, self.loop.config
    t0 = time.time()
    traces = loop.train_traces("init", config.collect.initial_examples,
                               np.random.default_rng(derive_seed(loop.seed, "init")))
    logging.info("init: %d training examples run through the system (%.0f s)",
                 len(traces), time.time() - t0)
    groups = []
    for component in tqdm(loop.specs, desc="initial preference collection", leave=False):
      found, stats = loop.collector.collect(component, traces, loop.values, "init",
                                            _round_index(None))
      groups += found
      record[f"collect/{component}"] = dataclasses.asdict(stats)
    held_out = [g for i, g in enumerate(groups) if i % 10 == 9]       # 10% held out
    train = [g for i, g in enumerate(groups) if i % 10 != 9]
    record["lrf_train"] = self.rewards.train(train, config.lrf.initial_epochs, "init")
    record["lrf_heldout_accuracy"] = self.rewards.pairwise_accuracy(held_out)
    loop.replay.add(groups)

  def iteration(self, component, traces, iteration, rng) -> dict:
    if self.online:
      return self._adapt(component, traces, iteration, rng)
    if self.loop.loop_config.monitor_alignment:
      return self._monitor(component, traces, iteration)
    return {}

  def _adapt(self, component, traces, iteration, rng) -> dict:
    """Fresh pairs under the current system; alignment on them; online update of one head."""
    loop = self.loop
    fresh, stats = loop.collector.collect(component, traces, loop.values,
                                          f"iter{iteration}", _round_index(iteration))
    record: dict[str, Any] = {"collect": dataclasses.asdict(stats),
                              # Live local-global alignment: the LRF on pairs it has never seen.
                              "alignment": self.rewards.pairwise_accuracy(fresh).get(component)}
    if fresh:
      room = loop.config.lrf.update_pairs - sum(g.num_pairs for g in fresh)
      mix = fresh + loop.replay.sample(component, room, rng)
      # Only this component's head moves: the shared layers and the other
      # components' heads stay exactly as they were (lrf/rewards.py).
      record["lrf_update"] = self.rewards.train(mix, loop.config.lrf.online_epochs,
                                                f"iter{iteration}", only_head=component)
    loop.replay.add(fresh)
    return record

  def _monitor(self, component, traces, iteration) -> dict:
    """Alignment of a static LRF on fresh pairs, paid outside the budget."""
    loop = self.loop
    counters = loop.system.counters
    before = counters.snapshot()["unmetered_runs"]
    with counters.unmetered():
      fresh, _ = loop.collector.collect(component, traces, loop.values,
                                        f"monitor{iteration}", _round_index(iteration))
    return {"alignment": self.rewards.pairwise_accuracy(fresh).get(component),
            "alignment_monitor_runs": counters.snapshot()["unmetered_runs"] - before}

  def arrays(self) -> dict:
    return {"lrf": self.rewards.checkpoint_arrays()}

  def meta(self) -> dict:
    return {"lrf_frozen_digest": self.rewards.frozen_digest()}

  def restore(self, arrays: dict, meta: dict) -> None:
    if "lrf" in arrays:
      self.rewards.restore_arrays(arrays["lrf"], meta.get("lrf_frozen_digest"))

  def text_stats(self) -> dict | None:
    return self.rewards.text_stats()

  def record_stats(self, record: dict) -> None:
    record["lrf_text"] = self.text_stats()


# ------------------------------------------------------------------ the method


@dataclasses.dataclass(frozen=True)
class OptimasVariant:
  """A Method (loop/method.py): Optimas or one of its ablations, by two choices."""

  name: str
  scoring: str        # SCORINGS
  lrf_update: str     # LRF_UPDATES

  def __post_init__(self):
    if self.scoring not in SCORINGS or self.lrf_update not in LRF_UPDATES:
      raise ValueError(f"{self.name}: scoring {self.scoring!r} (one of {SCORINGS}), "
                       f"lrf_update {self.lrf_update!r} (one of {LRF_UPDATES})")
    if (self.scoring == "lrf") != (self.lrf_update != "none"):
      raise ValueError(f"{self.name}: LRF scoring needs a trained LRF and a trained LRF "
                       "needs LRF scoring")

  @property
  def iterates(self) -> bool:
    return bool(self.scoring)

  @property
  def trains_lrf(self) -> bool:
    return self.lrf_update != "none"

  @property
  def adapts_lrf(self) -> bool:
    return self.lrf_update == "online"

  def optimize(self, harness: Harness) -> Outcome:
    return OptimasRun(self, harness).run()


VARIANTS = {v.name: v for v in (
    OptimasVariant("optimas", "lrf", "online"),
    OptimasVariant("optimas_static", "lrf", "static"),
    OptimasVariant("coordinate", "metric", "none"),
    OptimasVariant("unoptimized", "", "none"),
)}


class OptimasRun:
  """One run of a variant inside a Harness: the loop's state, its steps, its checkpoints."""

  def __init__(self, variant: OptimasVariant, harness: Harness):
    self.variant, self.harness = variant, harness
    self.task, self.config = harness.task, harness.config
    self.workdir, self.seed = harness.workdir, harness.seed
    self.system = harness.system
    self.loop_config = self.config.loop
    self.specs = self.system.specs
    self.values: SystemConfig = self.system.default_config()
    self.state = LoopState()
    self._iteration_start = 0                  # budget used when the current iteration began
    self.cut_iteration_runs = 0
    config = self.config
    # One cache file per process: a process never sees another's rows appear mid-run,
    # so every process makes the same cache hits and spends the same budget.
    cache_file = "rollouts.sqlite" if is_writer() else f"rollouts.{jax.process_index()}.sqlite"
    self.rollout_cache = (RolloutCache(self.workdir / cache_file)
                          if config.collect.cache else None)
    self.collector = PreferenceCollector(self.system, config.collect.num_candidates,
                                         config.collect.num_rollouts, cache=self.rollout_cache,
                                         prompt_hints=self.task.hints, seed=self.seed)
    self.replay = ReplayBuffer(config.lrf.replay_pairs)
    self.selector = ComponentSelector(list(self.specs), self.loop_config.selection,
                                      self.loop_config.cooldown,
                                      self.loop_config.selection_temperature)
    deterministic = all(c.deterministic for c in self.system.components.values())
    # val_repeats 0: one pass for a deterministic system, two for a stochastic one.
    self.val_repeats = self.loop_config.val_repeats or (1 if deterministic else 2)
    # The two choices, made once.
    self.lrf = (TrainedLrf(self, variant.adapts_lrf) if variant.trains_lrf else NoLrf(self))
    self.objective = {"lrf": self._lrf_objective, "metric": self._metric_objective,
                      "": None}[variant.scoring]
    # The local step of each variable kind.
    self.local_steps = {Prompt: self._optimize_prompt, Hyperparameters: self._search,
                        ModelChoice: self._search, ModelParameters: self._optimize_parameters}
    self.metrics = harness.metrics
    self.checkpoints = checkpoint.manager(self.workdir / "checkpoints")

  # ---------------------------------------------------------------- state

  def _arrays(self) -> dict:
    return {"params": {n: self.values[n] for n, s in self.specs.items()
                       if isinstance(s, ModelParameters)}, **self.lrf.arrays()}

  def _update_wall_time(self) -> None:
    # Wall time of this process's part plus what earlier (resumed) parts took.
    self.state.wall_s = self._wall_before + time.time() - self._started

  def save(self) -> None:
    self._update_wall_time()
    self.state.selector = self.selector.state_dict()
    self.state.replay = self.replay.state_dict()
    self.state.counters = self.system.counters.snapshot()
    self.state.rollout_cache = (None if self.rollout_cache is None
                                else self.rollout_cache.state_dict())
    self.state.llm_usage = self.task.usage_state()
    if self.lrf.rewards is not None:
      self.state.lrf_text = dict(self.lrf.rewards.encoder.stats)
    meta = {"loop": dataclasses.asdict(self.state), "config": self.values.json_values(),
            **self.lrf.meta()}
    checkpoint.save(self.checkpoints, self.state.iteration, self._arrays(), meta)

  def _load(self, manager, step: int) -> None:
    arrays, meta = checkpoint.restore(manager, step, self._arrays())
    self.values = SystemConfig({**meta["config"], **arrays["params"]}, self.specs)
    self.lrf.restore(arrays, meta)
    self.state = LoopState(**meta["loop"])
    self.selector.load_state_dict(self.state.selector)
    self.replay = ReplayBuffer.from_state_dict(self.state.replay)
    cap = self.system.counters.budget_cap
    self.system.counters.restore(self.state.counters)
    self.system.counters.set_budget_cap(cap)          # this run's config decides the cap
    if self.rollout_cache is not None and self.state.rollout_cache is not None:
      self.rollout_cache.load_state_dict(self.state.rollout_cache)
    if self.state.llm_usage is not None:
      self.task.load_usage_state(self.state.llm_usage)
    if self.lrf.rewards is not None and self.state.lrf_text:
      self.lrf.rewards.encoder.stats.update(self.state.lrf_text)

  def restore_or_init(self) -> str:
    # Resume order: this workdir's checkpoint > config.init_from > scratch.
    step = self.checkpoints.latest_step()
    if step is not None:
      self._load(self.checkpoints, step)
      how = f"resumed from {self.workdir}/checkpoints/{step}"
    elif self.config.init_from:
      path, step = checkpoint.resolve_init_from(self.config.init_from)
      self._load(checkpoint.manager(path, max_to_keep=None), step)
      return f"forked from {path}/{step}"
    else:
      how = "started from scratch"
    # An interrupted round's cached rollouts and log lines are redone, as an
    # uninterrupted run did them (same work, same budget, one line each).
    next_round = _round_index(self.state.iteration) if self.state.initialized else 0
    if self.rollout_cache is not None:
      self.rollout_cache.forget_rounds_from(next_round)
    self.metrics.drop(lambda r: (r.get("event") == "init" and not self.state.initialized) or
                      (r.get("event") in ("iteration", "budget_spent") and
                       r.get("iteration", -1) >= self.state.iteration))
    return how

  def val_scores(self, values: SystemConfig) -> np.ndarray:
    return self.harness.val_scores(values, self.val_repeats, self.state.val_memo)

  # ------------------------------------------------------------ local steps

  def train_traces(self, tag: str, count: int, rng: np.random.Generator):
    train = self.task.splits["train"]
    chosen = rng.choice(len(train), size=min(count, len(train)), replace=False)
    examples = [train[i] for i in sorted(chosen)]
    return self.system.run(examples, self.values, seed=derive_seed(self.seed, tag)).traces

  def _lrf_objective(self, component: str, traces):
    return LrfObjective(self.lrf.rewards, self.system, component, traces, self.values)

  def _metric_objective(self, component: str, traces):
    return MetricObjective(self.system, component, traces, self.values)

  def _search(self, component: str, objective, rng) -> tuple[Any, dict]:
    result = search_lib.search(self.specs[component], self.values[component],
                               objective.score_values, self.config.optimizers.search_budget, rng)
    return result.best, {"tried": len(result.table), "best_local": result.best_score}

  def _optimize_prompt(self, component: str, objective, rng) -> tuple[Any, dict]:
    optimizers = self.config.optimizers
    history = [tuple(x) for x in self.state.prompt_history.get(component, [])]
    result = prompt_lib.optimize_prompt(
        self.values[component], history, objective.score_values,
        description=self.system.components[component].description,
        hints=self.task.hints.get(component, ()), num_llm=optimizers.prompt_llm_proposals,
        num_edits=optimizers.prompt_edit_proposals,
        complete=self.task.complete if optimizers.prompt_llm_proposals else None, rng=rng)
    self.state.prompt_history[component] = [list(x) for x in (history + result.table)][-50:]
    return result.best, {"tried": len(result.table), "best_local": result.best_score,
                         "proposals": [p for p, _ in result.table[1:]][:4]}

  def _optimize_parameters(self, component: str, objective, rng) -> tuple[Any, dict]:
    return objective.optimize_parameters(self.task.policies[component], self.values[component],
                                         self.config.optimizers, rng)

  # ------------------------------------------------------------------ run

  def initialize(self) -> None:
    t0 = time.time()
    self.state.val_score = float(self.val_scores(self.values).mean())
    # Progress lines for the silent minutes before the first bar (LLM tasks on CPU).
    logging.info("init: validation of the starting configuration %.3f (%.0f s)",
                 self.state.val_score, time.time() - t0)
    record: dict[str, Any] = {"event": "init", "val": self.state.val_score}
    self.lrf.initialize(record)
    record.update(budget=self.harness.budget_used, seconds=time.time() - t0)
    self.lrf.record_stats(record)
    self.metrics.write(record)
    logging.info("init: %s", {k: v for k, v in record.items() if not k.startswith("collect")})
    self.state.initialized = True

  def _gate(self, component: str, candidate: SystemConfig, iteration: int) -> dict:
    incumbent = self.val_scores(self.values)
    candidate_scores = self.val_scores(candidate)
    self.state.gates += 1
    loop = self.loop_config
    alpha = gate_lib.level(loop.gate_confidence, loop.gate_spending, self.state.gates,
                           loop.iterations)
    decision = gate_lib.decide(
        incumbent, candidate_scores, test=loop.gate, confidence=loop.gate_confidence,
        alpha=alpha, min_gain=loop.min_gain, resamples=loop.gate_resamples,
        seed=derive_seed(self.seed, "gate", iteration) & 0x7FFFFFFF)
    if decision.accepted:
      self.values = candidate
      self.state.val_score = float(candidate_scores.mean())
      self.selector.accepted(component, iteration)
    return {"candidate_val": float(candidate_scores.mean()), "gate": decision.as_record(),
            "accepted": decision.accepted}

  def iterate(self, iteration: int) -> None:
    t0 = time.time()
    self._iteration_start = self.harness.budget_used
    rng = np.random.default_rng(derive_seed(self.seed, "iteration", iteration))
    traces = self.train_traces(f"iter{iteration}", self.loop_config.examples_per_iteration, rng)
    gaps = {c: float(np.mean([g.mean_gap for g in self.replay.groups(c)] or [0.0]))
            for c in self.specs}
    component = self.selector.select(iteration, gaps, rng)
    record: dict[str, Any] = {"event": "iteration", "iteration": iteration,
                              "component": component}
    record.update(self.lrf.iteration(component, traces, iteration, rng))
    objective = self.objective(component, traces)
    value, info = self.local_steps[type(self.specs[component])](component, objective, rng)
    record["local"] = {**info, "failed_outputs": objective.failed_outputs}
    candidate = self.values.override(**{component: value})
    changed = candidate.variable_hash(component) != self.values.variable_hash(component)
    record["changed"] = changed
    if changed:
      record.update(self._gate(component, candidate, iteration))
    else:
      record.update(candidate_val=self.state.val_score, accepted=False)
    self.lrf.record_stats(record)
    record.update(val=self.state.val_score, budget=self.harness.budget_used,
                  seconds=time.time() - t0)
    if not isinstance(self.specs[component], ModelParameters):
      record["value"] = value
    self.state.history.append({k: record[k] for k in ("iteration", "component", "accepted",
                                                      "val", "budget")})
    self.metrics.write(record)
    logging.info("iteration %d: %s %s val %.3f (candidate %.3f) budget %d", iteration, component,
                 "accepted" if record["accepted"] else "rejected", self.state.val_score,
                 record["candidate_val"], self.harness.budget_used)

  def run(self) -> Outcome:
    how = self.restore_or_init()
    self._started, self._wall_before = time.time(), self.state.wall_s
    logging.info("optimas loop (%s): %s", self.variant.name, how)
    try:
      if not self.state.initialized:
        self.initialize()
        self.save()
      if self.variant.iterates:
        bar = tqdm(range(self.state.iteration, self.loop_config.iterations),
                   desc=self.variant.name, initial=self.state.iteration,
                   total=self.loop_config.iterations)
        for iteration in bar:
          if not self.harness.budget_left():
            break
          self.iterate(iteration)
          self.state.iteration = iteration + 1
          self.save()
          bar.set_postfix(val=f"{self.state.val_score:.3f}", runs=self.harness.budget_used)
    except BudgetSpent as stop:
      # The cap fell inside a step: that step's change is not kept (it was not
      # validated); the incumbent is the result. No checkpoint is written, so a
      # resumed run redoes the same step and stops at the same point.
      self.cut_iteration_runs = self.harness.budget_used - self._iteration_start
      self.metrics.write({"event": "budget_spent", "iteration": self.state.iteration,
                          "budget": self.harness.budget_used, "detail": str(stop),
                          "cut_iteration_runs": self.cut_iteration_runs})
      logging.info("budget of %d system runs spent in iteration %d", self.harness.budget_used,
                   self.state.iteration)
    self._update_wall_time()                   # the test evaluation is not part of it
    self.checkpoints.wait_until_finished()
    return Outcome(
        config=self.values, iterations=self.state.iteration, history=self.state.history,
        wall_s=self.state.wall_s, cut_iteration_runs=self.cut_iteration_runs,
        val=self.state.val_score,
        detail={"lrf_text": self.lrf.text_stats(),
                "rollout_cache": (None if self.rollout_cache is None
                                  else self.rollout_cache.state_dict())})
