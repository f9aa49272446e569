"""Algorithm 1 of the Optimas paper: the loop, its baselines and its state.

Methods (config.method), all in one harness with one budget of system runs:
- "optimas":        collect -> train LRFs; per iteration select a component,
                    collect fresh pairs, adapt its LRF (replay mix), optimize
                    it locally against the LRF, gate on the validation metric.
- "optimas_static": the same without online LRF adaptation.
- "coordinate":     coordinate search scored by the true global metric on
                    the training examples (no LRF), same proposals and gate.
- "unoptimized":    evaluates the initial configuration.

Every iteration's randomness derives from (seed, iteration), the state is
checkpointed after each iteration, and a re-run of the same command resumes
from the workdir and ends where an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from optimas_jax import checkpoint
from optimas_jax.collect.cache import RolloutCache
from optimas_jax.collect.preferences import PreferenceCollector, PreferenceGroup
from optimas_jax.collect.replay import ReplayBuffer
from optimas_jax.optimize import policy as policy_lib
from optimas_jax.optimize import prompt as prompt_lib
from optimas_jax.optimize import search as search_lib
from optimas_jax.optimize.select import ComponentSelector
from optimas_jax.system import (Hyperparameters, ModelChoice, ModelParameters, Prompt,
                                SystemConfig, derive_seed)
from optimas_jax.tasks.base import Task

METHODS = ("optimas", "optimas_static", "coordinate", "unoptimized")


@dataclasses.dataclass
class LoopState:
  """Everything the loop needs to continue, apart from array pytrees."""

  iteration: int = 0                       # next iteration to run
  initialized: bool = False
  val_score: float | None = None
  history: list = dataclasses.field(default_factory=list)
  prompt_history: dict = dataclasses.field(default_factory=dict)
  selector: dict = dataclasses.field(default_factory=dict)
  replay: dict | None = None
  counters: dict | None = None
  wall_s: float = 0.0
  done: bool = False


class OptimasLoop:

  def __init__(self, task: Task, config, workdir: str):
    if config.method not in METHODS:
      raise ValueError(f"config.method={config.method!r}: choose one of {METHODS}")
    self.task, self.config, self.workdir = task, config, pathlib.Path(workdir)
    self.system = task.system
    self.lc = config.loop
    self.seed = config.seed
    self.specs = self.system.specs
    self.config_values: SystemConfig = self.system.default_config()
    self.state = LoopState()
    self.cache = RolloutCache(self.workdir / "rollouts.sqlite") if config.collect.cache else None
    self.collector = PreferenceCollector(self.system, config.collect.num_candidates,
                                         config.collect.num_rollouts, cache=self.cache,
                                         prompt_hints=task.hints)
    self.replay = ReplayBuffer(config.lrf.replay_pairs)
    self.selector = ComponentSelector(list(self.specs), self.lc.selection, self.lc.cooldown,
                                      self.lc.selection_temperature)
    self.rewards = None
    if config.method.startswith("optimas"):
      from optimas_jax.reward import LocalRewards
      comps = [(n, self.system.components[n].description) for n in self.specs]
      self.rewards = LocalRewards(config.lrf, comps, derive_seed(self.seed, "lrf") & 0x7FFFFFFF)
    self.metrics_path = self.workdir / "metrics.jsonl"
    self.mngr = checkpoint.manager(self.workdir / "checkpoints")
    self._val_cache: dict[str, float] = {}

  # ---------------------------------------------------------------- state

  def _arrays(self) -> dict:
    arrays: dict[str, Any] = {"params": {n: self.config_values[n] for n, s in self.specs.items()
                                         if isinstance(s, ModelParameters)}}
    if self.rewards is not None:
      arrays["lrf"] = self.rewards.checkpoint_arrays()
    return arrays

  def save(self) -> None:
    self.state.selector = self.selector.state_dict()
    self.state.replay = self.replay.state_dict()
    self.state.counters = self.system.counters.snapshot()
    meta = {"loop": dataclasses.asdict(self.state),
            "config": self.config_values.json_values()}
    if self.rewards is not None:
      meta["lrf_frozen_digest"] = self.rewards.frozen_digest()
    checkpoint.save(self.mngr, self.state.iteration, self._arrays(), meta)

  def _load(self, mngr, step: int) -> None:
    arrays, meta = checkpoint.restore(mngr, step, self._arrays())
    values = {**meta["config"], **arrays["params"]}
    self.config_values = SystemConfig(values, self.specs)
    if self.rewards is not None and "lrf" in arrays:
      self.rewards.restore_arrays(arrays["lrf"], meta.get("lrf_frozen_digest"))
    self.state = LoopState(**meta["loop"])
    self.selector.load_state_dict(self.state.selector)
    self.replay = ReplayBuffer.from_state_dict(self.state.replay)
    self.system.counters.restore(self.state.counters)

  def restore_or_init(self) -> str:
    # Resume order: this workdir's checkpoint > config.init_from > scratch.
    step = self.mngr.latest_step()
    if step is not None:
      self._load(self.mngr, step)
      return f"resumed from {self.workdir}/checkpoints/{step}"
    if self.config.init_from:
      path, step = checkpoint.resolve_init_from(self.config.init_from)
      src = checkpoint.manager(path, max_to_keep=None)
      self._load(src, step)
      self.state.done = False
      return f"forked from {path}/{step}"
    return "started from scratch"

  def log(self, record: dict) -> None:
    record = {"time": time.time(), **record}
    with open(self.metrics_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record, default=float) + "\n")

  # ------------------------------------------------------------ evaluation

  def evaluate(self, split: str, cfg: SystemConfig, repeats: int = 1) -> tuple[float, dict]:
    examples = self.task.splits[split]
    scores, extra = [], {}
    for r in range(repeats):
      res = self.system.run(examples, cfg, seed=derive_seed(self.seed, split, r))
      scores.append(float(self.system.evaluate(examples, res).mean()))
      for name, fn in self.task.extra_metrics.items():
        extra.setdefault(name, []).append(fn(examples, res))
      extra.setdefault("failed", []).append(res.num_failed)
    return float(np.mean(scores)), {k: float(np.mean(v)) for k, v in extra.items()}

  def val_score(self, cfg: SystemConfig) -> float:
    key = json.dumps({n: cfg.variable_hash(n) for n in cfg})
    if key not in self._val_cache:
      self._val_cache[key] = self.evaluate("val", cfg, self.lc.val_repeats)[0]
    return self._val_cache[key]

  # ------------------------------------------------------------ local steps

  def _train_traces(self, tag: str, n: int, rng: np.random.Generator):
    train = self.task.splits["train"]
    idx = rng.choice(len(train), size=min(n, len(train)), replace=False)
    examples = [train[i] for i in sorted(idx)]
    return self.system.run(examples, self.config_values, seed=derive_seed(self.seed, tag)).traces

  def _component_outputs(self, comp: str, traces, value) -> tuple[list, list]:
    cfg = self.config_values.override(**{comp: value})
    if cfg.variable_hash(comp) == self.config_values.variable_hash(comp):
      kept = [t for t in traces if comp in t.steps]   # the incumbent's recorded outputs
      return [t.steps[comp].inputs for t in kept], [t.steps[comp].outputs for t in kept]
    res = self.system.rerun([comp], traces, cfg)
    kept = [t for t in res.traces if comp in t.steps and not t.failed]
    return [t.steps[comp].inputs for t in kept], [t.steps[comp].outputs for t in kept]

  def _objective(self, comp: str, traces):
    """values -> score of each: mean LRF reward (Optimas) or the true metric (coordinate)."""
    if self.rewards is not None:
      def by_lrf(values):
        runs = [self._component_outputs(comp, traces, v) for v in values]
        flat = self.rewards.score_many([(comp, i, o) for ins, outs in runs
                                        for i, o in zip(ins, outs)])
        out, at = [], 0
        for ins, outs in runs:   # a value whose every output failed scores lowest
          out.append(float(flat[at:at + len(outs)].mean()) if outs else -1e9)
          at += len(outs)
        return out
      return by_lrf

    def by_metric(values):
      out = []
      for v in values:
        cfg = self.config_values.override(**{comp: v})
        res = self.system.run_from(comp, traces, cfg)
        out.append(float(self.system.evaluate([t.example for t in res.traces], res).mean()))
      return out
    return by_metric

  def optimize_component(self, comp: str, traces, rng: np.random.Generator) -> tuple[Any, dict]:
    spec, current = self.specs[comp], self.config_values[comp]
    oc = self.config.optimizers
    objective = self._objective(comp, traces)
    if isinstance(spec, (Hyperparameters, ModelChoice)):
      res = search_lib.search(spec, current, objective, oc.search_budget, rng)
      return res.best, {"tried": len(res.table), "best_local": res.best_score}
    if isinstance(spec, Prompt):
      history = [tuple(x) for x in self.state.prompt_history.get(comp, [])]
      res = prompt_lib.optimize_prompt(
          current, history, objective, description=self.system.components[comp].description,
          hints=self.task.hints.get(comp, ()), num_llm=oc.prompt_llm_proposals,
          num_edits=oc.prompt_edit_proposals,
          complete=self.task.complete if oc.prompt_llm_proposals else None, rng=rng)
      self.state.prompt_history[comp] = [list(x) for x in (history + res.table)][-50:]
      return res.best, {"tried": len(res.table), "best_local": res.best_score,
                        "proposals": [p for p, _ in res.table[1:]][:4]}
    return self._optimize_policy(comp, traces, rng)

  def _optimize_policy(self, comp: str, traces, rng: np.random.Generator) -> tuple[Any, dict]:
    adapter = self.task.policies[comp]
    inputs = [t.steps[comp].inputs for t in traces if comp in t.steps]
    feats, mask = adapter.features(inputs)
    params = self.config_values[comp]
    logits0 = np.asarray(adapter.apply(params, feats))
    oc = self.config.optimizers

    if self.rewards is not None:
      memo: dict[tuple[int, int], float] = {}

      def reward_fn(actions: np.ndarray) -> np.ndarray:
        todo = sorted({(b, int(a)) for b, row in enumerate(actions) for a in row} - set(memo))
        if todo:
          outs = [adapter.render(inputs[b], a, logits0[b]) for b, a in todo]
          scores = self.rewards.score(comp, [inputs[b] for b, _ in todo], outs)
          memo.update(zip(todo, scores.tolist()))
        return np.array([[memo[(b, int(a))] for a in row] for b, row in enumerate(actions)])
    else:
      raise ValueError("policy optimization needs a reward; coordinate search perturbs params")
    cfg = policy_lib.PolicyConfig(oc.policy_steps, oc.policy_group, oc.policy_lr, oc.policy_kl)
    update = policy_lib.make_update(adapter.apply, reward_fn, cfg)
    new, metrics = update(params, feats, mask, jax.random.key(int(rng.integers(2**31))))
    new = jax.tree.map(np.asarray, new)
    r = np.asarray(metrics["reward"])
    return new, {"reward_first": float(r[:3].mean()), "reward_last": float(r[-3:].mean()),
                 "kl": float(np.asarray(metrics["kl"])[-1])}

  def _perturb_policy(self, comp: str, traces, rng) -> tuple[Any, dict]:
    """Coordinate-search proposal for parameters: best of random perturbations by the metric."""
    params = self.config_values[comp]
    oc = self.config.optimizers
    cands = [params] + [jax.tree.map(lambda x: np.asarray(x) + oc.perturb_scale *
                                     rng.standard_normal(np.shape(x)).astype(np.float32), params)
                        for _ in range(oc.search_budget - 1)]
    scores = self._objective(comp, traces)(cands)
    best = int(np.argmax(scores))
    return cands[best], {"tried": len(cands), "best_local": scores[best]}

  # ------------------------------------------------------------------ run

  def budget_used(self) -> int:
    c = self.system.counters.snapshot()
    return c["system_runs"] + c["partial_runs"]

  def initialize(self) -> None:
    t0 = time.time()
    self.state.val_score = self.val_score(self.config_values)
    record = {"event": "init", "val": self.state.val_score}
    if self.rewards is not None:
      traces = self._train_traces("init", self.config.collect.initial_examples,
                                  np.random.default_rng(derive_seed(self.seed, "init")))
      groups: list[PreferenceGroup] = []
      for comp in tqdm(self.specs, desc="initial preference collection", leave=False):
        g, st = self.collector.collect(comp, traces, self.config_values, "init")
        groups += g
        record[f"collect/{comp}"] = dataclasses.asdict(st)
      held = [g for i, g in enumerate(groups) if i % 10 == 9]       # 10% held out
      train = [g for i, g in enumerate(groups) if i % 10 != 9]
      record["lrf_train"] = self.rewards.train(train, self.config.lrf.initial_epochs, "init")
      record["lrf_heldout_accuracy"] = self.rewards.pairwise_accuracy(held)
      self.replay.add(groups)
    record.update(budget=self.budget_used(), seconds=time.time() - t0)
    self.log(record)
    logging.info("init: %s", {k: v for k, v in record.items() if not k.startswith("collect")})
    self.state.initialized = True
    self.state.wall_s += time.time() - t0

  def iterate(self, it: int) -> None:
    t0 = time.time()
    rng = np.random.default_rng(derive_seed(self.seed, "iteration", it))
    traces = self._train_traces(f"iter{it}", self.lc.examples_per_iteration, rng)
    gaps = {c: float(np.mean([g.mean_gap for g in self.replay.groups(c)] or [0.0]))
            for c in self.specs}
    comp = self.selector.select(it, gaps, rng)
    record: dict[str, Any] = {"event": "iteration", "iteration": it, "component": comp}
    if self.rewards is not None:
      fresh, st = self.collector.collect(comp, traces, self.config_values, f"iter{it}")
      record["collect"] = dataclasses.asdict(st)
      # Live local-global alignment: the LRF on pairs it has never seen.
      record["alignment"] = self.rewards.pairwise_accuracy(fresh).get(comp)
      if self.config.method == "optimas" and fresh:
        budget = self.config.lrf.update_pairs - sum(g.num_pairs for g in fresh)
        mix = fresh + self.replay.sample(comp, max(budget, 0), rng)
        record["lrf_update"] = self.rewards.train(mix, self.config.lrf.online_epochs, f"iter{it}")
      self.replay.add(fresh)
      value, info = self.optimize_component(comp, traces, rng)
    elif isinstance(self.specs[comp], ModelParameters):
      value, info = self._perturb_policy(comp, traces, rng)
    else:
      value, info = self.optimize_component(comp, traces, rng)
    record["local"] = info
    candidate = self.config_values.override(**{comp: value})
    changed = candidate.variable_hash(comp) != self.config_values.variable_hash(comp)
    new_val = self.val_score(candidate) if changed else self.state.val_score
    accepted = changed and new_val >= self.state.val_score + self.lc.min_gain
    if accepted:
      self.config_values = candidate
      self.state.val_score = new_val
      self.selector.accepted(comp, it)
    record.update(changed=changed, candidate_val=new_val, accepted=accepted,
                  val=self.state.val_score, budget=self.budget_used(),
                  seconds=time.time() - t0)
    if isinstance(self.specs[comp], (Prompt, Hyperparameters, ModelChoice)):
      record["value"] = value
    self.state.history.append({k: record[k] for k in ("iteration", "component", "accepted",
                                                      "val", "budget")})
    self.log(record)
    logging.info("iteration %d: %s %s val %.3f (candidate %.3f) budget %d", it, comp,
                 "accepted" if accepted else "rejected", self.state.val_score, new_val,
                 self.budget_used())
    self.state.wall_s += time.time() - t0

  def run(self) -> dict:
    how = self.restore_or_init()
    logging.info("optimas loop (%s): %s", self.config.method, how)
    if not self.state.initialized:
      self.initialize()
      self.save()
    if self.config.method != "unoptimized":
      bar = tqdm(range(self.state.iteration, self.lc.iterations), desc=f"{self.config.method}",
                 initial=self.state.iteration, total=self.lc.iterations)
      for it in bar:
        if self.lc.budget_runs and self.budget_used() >= self.lc.budget_runs:
          logging.info("budget of %d system runs spent", self.lc.budget_runs)
          break
        self.iterate(it)
        self.state.iteration = it + 1
        self.save()
        bar.set_postfix(val=f"{self.state.val_score:.3f}", runs=self.budget_used())
    return self.finish()

  def finish(self) -> dict:
    test, extra = self.evaluate("test", self.config_values, self.lc.test_repeats)
    counters = self.system.counters.snapshot()
    summary = {
        "method": self.config.method, "seed": self.seed, "test": test, "test_extra": extra,
        "val": self.state.val_score, "iterations": self.state.iteration,
        "budget_runs": self.budget_used(), "wall_s": self.state.wall_s,
        "config": self.config_values.json_values(), "counters": counters,
        "history": self.state.history,
        "cache": None if self.cache is None else {"hits": self.cache.hits,
                                                   "misses": self.cache.misses},
        "llm_usage": (self.task.llm_pool.usage() if self.task.llm_pool is not None else
                      None if self.task.llm is None else self.task.llm.usage.as_dict()),
    }
    self.config_values.save(self.workdir / "final_config")
    (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    self.state.done = True
    self.mngr.wait_until_finished()
    return summary


def run(config, workdir: str) -> dict:
  """Entry for `config.job == "optimas"`."""
  from optimas_jax.tasks import registry
  task = registry.build(config)
  summary = OptimasLoop(task, config, workdir).run()
  print(json.dumps({k: summary[k] for k in ("method", "seed", "test", "val", "iterations",
                                            "budget_runs", "wall_s")}, default=float))
  return summary
