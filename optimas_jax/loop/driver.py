"""Algorithm 1 of the Optimas paper, and its baselines in the same harness.

Per iteration: pick a component; (Optimas) collect fresh preference pairs
and adapt its LRF; optimize the component locally against its objective;
keep the change only if the paired validation gate accepts it. What differs
between methods is chosen once, in __init__ (loop/methods.py).

Every iteration's randomness derives from (seed, iteration); the state is
checkpointed after each iteration; a re-run of the same command resumes from
the workdir and ends where an uninterrupted run would, with the same budget.
All methods spend one budget of system runs (system/counters.py) and stop
exactly at `loop.budget_runs`, inside an iteration if need be.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import numpy as np
from absl import logging
from tqdm import tqdm

from optimas_jax import checkpoint
from optimas_jax.collect.cache import RolloutCache
from optimas_jax.collect.preferences import PreferenceCollector
from optimas_jax.collect.replay import ReplayBuffer
from optimas_jax.loop import gate as gate_lib
from optimas_jax.loop.methods import METHODS, LrfObjective, MetricObjective
from optimas_jax.loop.state import LoopState
from optimas_jax.metrics_log import MetricsLog
from optimas_jax.optimize import prompt as prompt_lib
from optimas_jax.optimize import search as search_lib
from optimas_jax.optimize.select import ComponentSelector
from optimas_jax.system import (BudgetSpent, Hyperparameters, ModelChoice, ModelParameters,
                                Prompt, SystemConfig, derive_seed)
from optimas_jax.tasks.base import Task


def _round_index(iteration: int | None) -> int:
  """Rollout-cache round of the initial collection (0) or of an iteration (it + 1)."""
  return 0 if iteration is None else iteration + 1


class OptimasLoop:

  def __init__(self, task: Task, config, workdir: str):
    self.task, self.config, self.workdir = task, config, pathlib.Path(workdir)
    self.method = METHODS[config.method]
    self.system = task.system
    self.loop_config = config.loop
    self.seed = config.seed
    self.specs = self.system.specs
    self.config_values: SystemConfig = self.system.default_config()
    self.state = LoopState()
    self._iteration_start = 0                  # budget used when the current iteration began
    self.cut_iteration_runs = 0
    self.system.counters.set_budget_cap(self.loop_config.budget_runs)
    self.rollout_cache = (RolloutCache(self.workdir / "rollouts.sqlite")
                          if config.collect.cache else None)
    self.collector = PreferenceCollector(self.system, config.collect.num_candidates,
                                         config.collect.num_rollouts, cache=self.rollout_cache,
                                         prompt_hints=task.hints, seed=self.seed)
    self.replay = ReplayBuffer(config.lrf.replay_pairs)
    self.selector = ComponentSelector(list(self.specs), self.loop_config.selection,
                                      self.loop_config.cooldown,
                                      self.loop_config.selection_temperature)
    deterministic = all(c.deterministic for c in self.system.components.values())
    # val_repeats 0: one pass for a deterministic system, two for a stochastic one.
    self.val_repeats = self.loop_config.val_repeats or (1 if deterministic else 2)
    self.rewards = None
    if self.method.trains_lrf:
      from optimas_jax.lrf.rewards import LocalRewards   # loads the backbone
      components = [(n, self.system.components[n].description) for n in self.specs]
      self.rewards = LocalRewards(config.lrf, components,
                                  derive_seed(self.seed, "lrf") & 0x7FFFFFFF)
    # The local step of each variable kind, and what scores its candidates.
    self.local_steps = {Prompt: self._optimize_prompt, Hyperparameters: self._search,
                        ModelChoice: self._search, ModelParameters: self._optimize_parameters}
    self.objective = {"lrf": self._lrf_objective, "metric": self._metric_objective,
                      "": None}[self.method.objective]
    self.metrics = MetricsLog(self.workdir / "metrics.jsonl")
    self.checkpoints = checkpoint.manager(self.workdir / "checkpoints")

  # ---------------------------------------------------------------- state

  def _arrays(self) -> dict:
    arrays: dict[str, Any] = {"params": {n: self.config_values[n] for n, s in self.specs.items()
                                         if isinstance(s, ModelParameters)}}
    if self.rewards is not None:
      arrays["lrf"] = self.rewards.checkpoint_arrays()
    return arrays

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
    if self.rewards is not None:
      self.state.lrf_text = dict(self.rewards.encoder.stats)
    meta = {"loop": dataclasses.asdict(self.state),
            "config": self.config_values.json_values()}
    if self.rewards is not None:
      meta["lrf_frozen_digest"] = self.rewards.frozen_digest()
    checkpoint.save(self.checkpoints, self.state.iteration, self._arrays(), meta)

  def _load(self, manager, step: int) -> None:
    arrays, meta = checkpoint.restore(manager, step, self._arrays())
    values = {**meta["config"], **arrays["params"]}
    self.config_values = SystemConfig(values, self.specs)
    if self.rewards is not None and "lrf" in arrays:
      self.rewards.restore_arrays(arrays["lrf"], meta.get("lrf_frozen_digest"))
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
    if self.rewards is not None and self.state.lrf_text:
      self.rewards.encoder.stats.update(self.state.lrf_text)

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

  # ------------------------------------------------------------ evaluation

  def evaluate(self, split: str, values: SystemConfig, repeats: int = 1
               ) -> tuple[np.ndarray, dict]:
    """Per-example scores (mean over `repeats` seeded passes) and extra metrics."""
    examples = self.task.splits[split]
    scores, extra = [], {}
    for r in range(repeats):
      result = self.system.run(examples, values, seed=derive_seed(self.seed, split, r))
      scores.append(self.system.evaluate(examples, result))
      for name, fn in self.task.extra_metrics.items():
        extra.setdefault(name, []).append(fn(examples, result))
      extra.setdefault("failed", []).append(result.num_failed)
    return np.mean(scores, axis=0), {k: float(np.mean(v)) for k, v in extra.items()}

  def val_scores(self, values: SystemConfig) -> np.ndarray:
    """Per-example validation scores, memoised by the configuration's variable hashes."""
    key = json.dumps({n: values.variable_hash(n) for n in values})
    if key not in self.state.val_memo:
      self.state.val_memo[key] = self.evaluate("val", values, self.val_repeats)[0].tolist()
    return np.asarray(self.state.val_memo[key])

  # ------------------------------------------------------------ local steps

  def _train_traces(self, tag: str, count: int, rng: np.random.Generator):
    train = self.task.splits["train"]
    chosen = rng.choice(len(train), size=min(count, len(train)), replace=False)
    examples = [train[i] for i in sorted(chosen)]
    return self.system.run(examples, self.config_values, seed=derive_seed(self.seed, tag)).traces

  def _lrf_objective(self, component: str, traces):
    return LrfObjective(self.rewards, self.system, component, traces, self.config_values)

  def _metric_objective(self, component: str, traces):
    return MetricObjective(self.system, component, traces, self.config_values)

  def _search(self, component: str, objective, rng) -> tuple[Any, dict]:
    result = search_lib.search(self.specs[component], self.config_values[component],
                               objective.score_values, self.config.optimizers.search_budget, rng)
    return result.best, {"tried": len(result.table), "best_local": result.best_score}

  def _optimize_prompt(self, component: str, objective, rng) -> tuple[Any, dict]:
    optimizers = self.config.optimizers
    history = [tuple(x) for x in self.state.prompt_history.get(component, [])]
    result = prompt_lib.optimize_prompt(
        self.config_values[component], history, objective.score_values,
        description=self.system.components[component].description,
        hints=self.task.hints.get(component, ()), num_llm=optimizers.prompt_llm_proposals,
        num_edits=optimizers.prompt_edit_proposals,
        complete=self.task.complete if optimizers.prompt_llm_proposals else None, rng=rng)
    self.state.prompt_history[component] = [list(x) for x in (history + result.table)][-50:]
    return result.best, {"tried": len(result.table), "best_local": result.best_score,
                         "proposals": [p for p, _ in result.table[1:]][:4]}

  def _optimize_parameters(self, component: str, objective, rng) -> tuple[Any, dict]:
    return objective.optimize_parameters(self.task.policies[component],
                                         self.config_values[component],
                                         self.config.optimizers, rng)

  # ------------------------------------------------------------------ run

  def budget_used(self) -> int:
    return self.system.counters.budget_used

  def initialize(self) -> None:
    t0 = time.time()
    self.state.val_score = float(self.val_scores(self.config_values).mean())
    # Progress lines for the silent minutes before the first bar (LLM tasks on CPU).
    logging.info("init: validation of the starting configuration %.3f (%.0f s)",
                 self.state.val_score, time.time() - t0)
    record: dict[str, Any] = {"event": "init", "val": self.state.val_score}
    if self.method.trains_lrf:
      traces = self._train_traces("init", self.config.collect.initial_examples,
                                  np.random.default_rng(derive_seed(self.seed, "init")))
      logging.info("init: %d training examples run through the system (%.0f s)",
                   len(traces), time.time() - t0)
      groups = []
      for component in tqdm(self.specs, desc="initial preference collection", leave=False):
        found, stats = self.collector.collect(component, traces, self.config_values, "init",
                                              _round_index(None))
        groups += found
        record[f"collect/{component}"] = dataclasses.asdict(stats)
      held_out = [g for i, g in enumerate(groups) if i % 10 == 9]       # 10% held out
      train = [g for i, g in enumerate(groups) if i % 10 != 9]
      record["lrf_train"] = self.rewards.train(train, self.config.lrf.initial_epochs, "init")
      record["lrf_heldout_accuracy"] = self.rewards.pairwise_accuracy(held_out)
      self.replay.add(groups)
    record.update(budget=self.budget_used(), seconds=time.time() - t0)
    if self.rewards is not None:
      record["lrf_text"] = self.rewards.text_stats()
    self.metrics.write(record)
    logging.info("init: %s", {k: v for k, v in record.items() if not k.startswith("collect")})
    self.state.initialized = True

  def _adapt_lrf(self, component: str, traces, iteration: int, rng) -> dict:
    """Fresh pairs under the current system; alignment on them; online update of one head."""
    fresh, stats = self.collector.collect(component, traces, self.config_values,
                                          f"iter{iteration}", _round_index(iteration))
    record: dict[str, Any] = {"collect": dataclasses.asdict(stats),
                              # Live local-global alignment: the LRF on pairs it has never seen.
                              "alignment": self.rewards.pairwise_accuracy(fresh).get(component)}
    if fresh:
      room = self.config.lrf.update_pairs - sum(g.num_pairs for g in fresh)
      mix = fresh + self.replay.sample(component, room, rng)
      # Only this component's head moves: the shared layers and the other
      # components' heads stay exactly as they were (lrf/rewards.py).
      record["lrf_update"] = self.rewards.train(mix, self.config.lrf.online_epochs,
                                                f"iter{iteration}", only_head=component)
    self.replay.add(fresh)
    return record

  def _monitor_alignment(self, component: str, traces, iteration: int) -> dict:
    """Optional for a static LRF: alignment on fresh pairs, paid outside the budget."""
    before = self.system.counters.snapshot()["unmetered_runs"]
    with self.system.counters.unmetered():
      fresh, _ = self.collector.collect(component, traces, self.config_values,
                                        f"monitor{iteration}", _round_index(iteration))
    return {"alignment": self.rewards.pairwise_accuracy(fresh).get(component),
            "alignment_monitor_runs": self.system.counters.snapshot()["unmetered_runs"] - before}

  def _gate(self, component: str, candidate: SystemConfig, iteration: int) -> dict:
    incumbent = self.val_scores(self.config_values)
    candidate_scores = self.val_scores(candidate)
    self.state.gates += 1
    loop = self.loop_config
    alpha = gate_lib.level(loop.gate_confidence, loop.gate_spending,
                           self.state.gates, loop.iterations)
    decision = gate_lib.decide(
        incumbent, candidate_scores, test=loop.gate, confidence=loop.gate_confidence,
        alpha=alpha, min_gain=loop.min_gain, resamples=loop.gate_resamples,
        seed=derive_seed(self.seed, "gate", iteration) & 0x7FFFFFFF)
    if decision.accepted:
      self.config_values = candidate
      self.state.val_score = float(candidate_scores.mean())
      self.selector.accepted(component, iteration)
    return {"candidate_val": float(candidate_scores.mean()), "gate": decision.as_record(),
            "accepted": decision.accepted}

  def iterate(self, iteration: int) -> None:
    t0 = time.time()
    self._iteration_start = self.budget_used()
    rng = np.random.default_rng(derive_seed(self.seed, "iteration", iteration))
    traces = self._train_traces(f"iter{iteration}", self.loop_config.examples_per_iteration, rng)
    gaps = {c: float(np.mean([g.mean_gap for g in self.replay.groups(c)] or [0.0]))
            for c in self.specs}
    component = self.selector.select(iteration, gaps, rng)
    record: dict[str, Any] = {"event": "iteration", "iteration": iteration,
                              "component": component}
    if self.method.adapts_lrf:
      record.update(self._adapt_lrf(component, traces, iteration, rng))
    elif self.rewards is not None and self.loop_config.monitor_alignment:
      record.update(self._monitor_alignment(component, traces, iteration))
    objective = self.objective(component, traces)
    value, info = self.local_steps[type(self.specs[component])](component, objective, rng)
    record["local"] = {**info, "failed_outputs": objective.failed_outputs}
    candidate = self.config_values.override(**{component: value})
    changed = candidate.variable_hash(component) != self.config_values.variable_hash(component)
    record["changed"] = changed
    if changed:
      record.update(self._gate(component, candidate, iteration))
    else:
      record.update(candidate_val=self.state.val_score, accepted=False)
    if self.rewards is not None:
      record["lrf_text"] = self.rewards.text_stats()
    record.update(val=self.state.val_score, budget=self.budget_used(),
                  seconds=time.time() - t0)
    if not isinstance(self.specs[component], ModelParameters):
      record["value"] = value
    self.state.history.append({k: record[k] for k in ("iteration", "component", "accepted",
                                                      "val", "budget")})
    self.metrics.write(record)
    logging.info("iteration %d: %s %s val %.3f (candidate %.3f) budget %d", iteration, component,
                 "accepted" if record["accepted"] else "rejected", self.state.val_score,
                 record["candidate_val"], self.budget_used())

  def _budget_left(self) -> bool:
    cap = self.system.counters.budget_cap
    return not cap or self.budget_used() < cap

  def run(self) -> dict:
    how = self.restore_or_init()
    self._started, self._wall_before = time.time(), self.state.wall_s
    logging.info("optimas loop (%s): %s", self.method.name, how)
    try:
      if not self.state.initialized:
        self.initialize()
        self.save()
      if self.method.iterates:
        bar = tqdm(range(self.state.iteration, self.loop_config.iterations),
                   desc=self.method.name, initial=self.state.iteration,
                   total=self.loop_config.iterations)
        for iteration in bar:
          if not self._budget_left():
            break
          self.iterate(iteration)
          self.state.iteration = iteration + 1
          self.save()
          bar.set_postfix(val=f"{self.state.val_score:.3f}", runs=self.budget_used())
    except BudgetSpent as stop:
      # The cap fell inside a step: that step's change is not kept (it was not
      # validated); the incumbent is the result. No checkpoint is written, so a
      # resumed run redoes the same step and stops at the same point.
      self.cut_iteration_runs = self.budget_used() - self._iteration_start
      self.metrics.write({"event": "budget_spent", "iteration": self.state.iteration,
                          "budget": self.budget_used(), "detail": str(stop),
                          "cut_iteration_runs": self.cut_iteration_runs})
      logging.info("budget of %d system runs spent in iteration %d", self.budget_used(),
                   self.state.iteration)
    return self.finish()

  def finish(self) -> dict:
    self._update_wall_time()                   # the test evaluation is not part of it
    counters = self.system.counters.snapshot()
    budget = self.budget_used()
    with self.system.counters.unmetered():     # the test set is not part of the budget
      test_scores, extra = self.evaluate("test", self.config_values,
                                         self.loop_config.test_repeats)
    summary = {
        "method": self.method.name, "seed": self.seed, "test": float(test_scores.mean()),
        "test_extra": extra, "val": self.state.val_score, "iterations": self.state.iteration,
        "budget_runs": budget, "budget_cap": self.system.counters.budget_cap,
        # Runs spent in the iteration the cap cut (its change was never validated).
        "cut_iteration_runs": self.cut_iteration_runs,
        "lrf_text": None if self.rewards is None else self.rewards.text_stats(),
        "test_runs": self.system.counters.snapshot()["unmetered_runs"]
                     - counters["unmetered_runs"],
        "wall_s": self.state.wall_s, "config": self.config_values.json_values(),
        "counters": counters, "history": self.state.history,
        "rollout_cache": (None if self.rollout_cache is None
                          else self.rollout_cache.state_dict()),
        "llm_usage": self.task.usage(),
    }
    self.config_values.save(self.workdir / "final_config")
    (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    self.checkpoints.wait_until_finished()
    return summary


def run_method(task: Task, config, workdir: str) -> dict:
  """Runs `config.method` on `task`: OptimasLoop, or the method's own runner (the peers)."""
  runner = METHODS[config.method].runner
  if runner:
    import importlib
    module, fn = runner.split(":")
    return getattr(importlib.import_module(module), fn)(task, config, workdir)
  return OptimasLoop(task, config, workdir).run()


def run(config, workdir: str) -> dict:
  """Entry for `config.job == "optimas"`."""
  from optimas_jax.tasks import registry
  task = registry.build(config)
  summary = run_method(task, config, workdir)
  print(json.dumps({k: summary[k] for k in ("method", "seed", "test", "val", "iterations",
                                            "budget_runs", "wall_s")}, default=float))
  return summary
