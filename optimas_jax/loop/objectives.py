"""What scores a component's candidate values during a local step.

An objective scores a list of candidate values of one component (prompts,
hyperparameters, model choices) and optimizes a Flax ranking policy's
parameters (model parameters): by LRF reward (policy gradient against the
LRF; LrfObjective) or by the true metric (random perturbations scored by
re-running, or RL against the metric for an LLM adapter; MetricObjective).
Which one a method uses is chosen once (loop/optimas.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from optimas_jax.optimize import policy as policy_lib
from optimas_jax.optimize import text_policy
from optimas_jax.system import SystemConfig, Trace
from optimas_jax.tasks.base import TextPolicy


def eligible_traces(component: str, traces: Sequence[Trace]) -> list[Trace]:
  """Traces where `component` ran or failed: its inputs exist, so it can be re-run."""
  return [t for t in traces
          if component in t.steps or (t.failed and t.failure.component == component)]


class LrfObjective:
  """Mean LRF reward of a component's outputs on the iteration's traces.

  A value whose run fails on an example scores that example at the lowest
  reward seen in the same call (a failure is never better than any output,
  and never vanishes from the mean); `failed_outputs` counts them.
  """

  def __init__(self, rewards, system, component: str, traces: Sequence[Trace],
               incumbent: SystemConfig):
    self.rewards, self.system, self.component = rewards, system, component
    self.traces = eligible_traces(component, traces)
    self.incumbent = incumbent
    self.failed_outputs = 0

  def _outputs(self, value) -> tuple[list[dict], list[dict | None]]:
    """(inputs, outputs or None where the run failed) of `value` on every trace."""
    comp = self.component
    config = self.incumbent.override(**{comp: value})
    traces = self.traces
    if config.variable_hash(comp) != self.incumbent.variable_hash(comp):
      traces = self.system.rerun([comp], traces, config).traces
    inputs = [self._inputs_of(t) for t in traces]
    outputs = [t.steps[comp].outputs if comp in t.steps else None for t in traces]
    return inputs, outputs

  def _inputs_of(self, trace: Trace) -> dict:
    if self.component in trace.steps:
      return trace.steps[self.component].inputs
    comp = self.system.components[self.component]
    context = trace.context()
    return {f: context[f] for f in comp.input_fields}

  def score_values(self, values: Sequence[Any]) -> list[float]:
    runs = [self._outputs(v) for v in values]
    triples = [(self.component, i, o) for inputs, outputs in runs
               for i, o in zip(inputs, outputs) if o is not None]
    flat = self.rewards.score_many(triples) if triples else np.zeros(0)
    worst = float(flat.min()) if len(flat) else 0.0
    scores, at = [], 0
    for inputs, outputs in runs:
      per_example = []
      for o in outputs:
        if o is None:
          self.failed_outputs += 1
          per_example.append(worst)
        else:
          per_example.append(float(flat[at]))
          at += 1
      scores.append(float(np.mean(per_example)) if per_example else 0.0)
    return scores

  def optimize_parameters(self, adapter, params, optimizer_config,
                          rng: np.random.Generator) -> tuple[Any, dict]:
    """Policy gradient against the LRF: each sampled ranking (or, for an LLM
    component's LoRA adapter, each sampled text) is rendered and scored."""
    comp = self.component
    if isinstance(adapter, TextPolicy):
      inputs = [t.steps[comp].inputs for t in self.traces if comp in t.steps]

      def lrf_reward(rows, outputs):
        # A dense, cheap reward: no system run, the LRF scores (input, text).
        return self.rewards.score(comp, [inputs[i] for i in rows], list(outputs))

      return text_policy.optimize(adapter, params, inputs, lrf_reward, optimizer_config.rl, rng)
    policy_config = policy_lib.PolicyConfig(**optimizer_config.policy)
    inputs = [t.steps[comp].inputs for t in self.traces if comp in t.steps]
    if not inputs:
      return params, {"skipped": "the component ran on no training trace"}
    features, mask = adapter.features(inputs)
    real = mask.sum(axis=1)
    reward_memo: dict[tuple, float] = {}

    def reward_fn(orderings: np.ndarray) -> np.ndarray:
      keys = [[(b, tuple(int(j) for j in row[:real[b]])) for row in group]
              for b, group in enumerate(orderings)]
      todo = sorted({k for group in keys for k in group} - set(reward_memo))
      if todo:
        outputs = [adapter.render(inputs[b], order, features[b]) for b, order in todo]
        scores = self.rewards.score(comp, [inputs[b] for b, _ in todo], outputs)
        reward_memo.update(zip(todo, scores.tolist()))
      return np.array([[reward_memo[k] for k in group] for group in keys], np.float32)

    key = jax.random.key(int(rng.integers(2**31)))
    new, metrics = policy_lib.optimize(params, features, mask, adapter.num_picks(mask),
                                       reward_fn, key, policy_config, adapter.apply)
    rewards = metrics["reward"]
    return jax.tree.map(np.asarray, new), {
        "reward_first": float(rewards[:3].mean()), "reward_last": float(rewards[-3:].mean()),
        "kl": float(metrics["kl"][-1]), "rankings_scored": len(reward_memo)}


class MetricObjective:
  """The true global metric after re-running the component and everything downstream."""

  def __init__(self, system, component: str, traces: Sequence[Trace], incumbent: SystemConfig):
    self.system, self.component = system, component
    self.traces = eligible_traces(component, traces)
    self.incumbent = incumbent
    self.failed_outputs = 0

  def score_values(self, values: Sequence[Any]) -> list[float]:
    out = []
    for value in values:
      config = self.incumbent.override(**{self.component: value})
      result = self.system.run_from(self.component, self.traces, config)
      self.failed_outputs += result.num_failed   # scored as failures by evaluate()
      out.append(float(self.system.evaluate([t.example for t in result.traces], result).mean()))
    return out

  def optimize_parameters(self, adapter, params, optimizer_config,
                          rng: np.random.Generator) -> tuple[Any, dict]:
    """Best of `search_budget` random perturbations of the parameters, by the metric;
    for an LLM component's LoRA adapter, RL with the true metric as the reward."""
    if isinstance(adapter, TextPolicy):
      return self._rl_against_metric(adapter, params, optimizer_config.rl, rng)
    scale = optimizer_config.perturb_scale
    candidates = [params] + [
        jax.tree.map(lambda x: np.asarray(x) + scale *
                     rng.standard_normal(np.shape(x)).astype(np.float32), params)
        for _ in range(optimizer_config.search_budget - 1)]
    scores = self.score_values(candidates)
    best = int(np.argmax(scores))          # ties keep the incumbent (index 0)
    return candidates[best], {"tried": len(candidates), "best_local": scores[best]}

  def _rl_against_metric(self, policy, adapter_value, rl_config, rng):
    """Each sampled text is scored by running the downstream components with it
    plugged in (`metric_rollouts` Monte-Carlo samples), every run counted."""
    comp = self.component
    traces = [t for t in self.traces if comp in t.steps]
    calls = [0]

    def metric_reward(rows, outputs):
      calls[0] += 1
      m = rl_config.metric_rollouts
      batch = [traces[i].with_outputs(comp, o) for i, o in zip(rows, outputs) for _ in range(m)]
      samples = [f"rl{calls[0]}:{j}" for _ in rows for j in range(m)]
      result = self.system.run_after(comp, batch, self.incumbent, sample=samples)
      self.failed_outputs += result.num_failed        # scored as failures, counted
      scores = self.system.evaluate([t.example for t in result.traces], result)
      return scores.reshape(len(rows), m).mean(axis=1)

    return text_policy.optimize(policy, adapter_value, [t.steps[comp].inputs for t in traces],
                                metric_reward, rl_config, rng)
