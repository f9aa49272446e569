"""RL of an LLM component's LoRA adapter against a host-side reward (a local step).

The component (tasks.base.TextPolicy) is trained where it runs: each RL
step draws `prompts` of the iteration's component inputs, samples `group_size`
completions of each with the current adapter, turns every completion into
the component's output dict through the component's own `output`, and asks
the reward for one number per (input, output). The reward is the LRF
(Optimas) or the true metric after the downstream components (loop/objectives.py);
it runs on the host, outside the jitted update (rl/). A local step starts a
fresh optimizer from the incumbent adapter: the adapter, not the moments, is
the component's variable, so a rejected step leaves nothing behind.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

def lora_config_of(adapter):
  """The LoraConfig an adapter pytree was made with (rank, alpha, targets)."""
  from optimas_jax.models import lora
  modules = [ab for layer in adapter["layers"].values() for ab in layer.values()]
  rank = int(np.shape(modules[0]["a"])[1])
  targets = sorted({name for layer in adapter["layers"].values() for name in layer})
  return lora.LoraConfig(rank=rank, alpha=float(np.asarray(adapter["scaling"])) * rank,
                         targets=tuple(targets))


# (rows: indices into the step's inputs, outputs: one output dict each) -> rewards
RewardFn = Callable[[Sequence[int], Sequence[dict]], np.ndarray]


def memory_report(policy, rl_config) -> str:
  """The per-device estimate of one RL step of `policy` at the longest prompt its context
  allows (a start-up bound; each local step logs its own at its real prompt lengths)."""
  from optimas_jax.rl.config import from_experiment
  from optimas_jax.rl.trainer import RLTrainer
  trainer = RLTrainer(policy.llm, from_experiment(rl_config,
                                                  max_new_tokens=policy.max_new_tokens))
  return trainer.memory_estimate(rl_config.prompts,
                                 policy.llm.generator.max_context - policy.max_new_tokens)


def optimize(policy, adapter, inputs: Sequence[dict], reward: RewardFn, rl_config,
             rng: np.random.Generator) -> tuple[Any, dict]:
  """`rl_config.steps` RL steps from `adapter`; returns (new adapter, stats)."""
  from optimas_jax.rl.config import from_experiment
  from optimas_jax.rl.trainer import RLTrainer
  if not inputs:
    return adapter, {"skipped": "the component ran on no training trace"}
  requests = policy.requests(inputs)
  prompts = [policy.llm.render(r) for r in requests]
  group = rl_config.group_size
  trainer = RLTrainer(policy.llm, from_experiment(
      rl_config, max_new_tokens=policy.max_new_tokens, lora=lora_config_of(adapter)),
      adapter=adapter, seed=int(rng.integers(2**31)))
  logging.info(trainer.memory_estimate(min(rl_config.prompts, len(inputs)),
                                       trainer.longest_prompt(prompts)))
  history, t0 = [], time.time()
  for step in range(rl_config.steps):
    chosen = [int(i) for i in rng.choice(len(inputs), size=min(rl_config.prompts, len(inputs)),
                                         replace=False)]

    def reward_fn(step_prompts: list[str], completions: list[str], chosen=chosen) -> np.ndarray:
      # RLTrainer.step's contract: prompt k's `group` samples are rows k*group..(k+1)*group-1.
      # Rows by position, never by prompt text: two inputs may render to one prompt.
      if len(completions) != len(chosen) * group:
        raise ValueError(f"{len(completions)} completions for {len(chosen)} prompts x "
                         f"group {group}")
      rows = [chosen[k // group] for k in range(len(completions))]
      return np.asarray(reward(rows, [policy.output(c) for c in completions]), np.float32)

    stats = trainer.step([prompts[i] for i in chosen], reward_fn,
                         seed=int(rng.integers(2**31)))
    history.append(stats)
  rewards = [float(h["reward_mean"]) for h in history]
  return trainer.adapter, {
      "rl_steps": len(history), "reward_first": rewards[0], "reward_last": rewards[-1],
      "kl_last": float(history[-1].get("kl") or 0.0),
      "samples": len(history) * len(chosen) * group, "seconds": time.time() - t0}
