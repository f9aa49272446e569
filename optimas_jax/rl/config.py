"""RLConfig: how an LLM component is trained against its local reward."""

from __future__ import annotations

import dataclasses
from typing import Literal

from optimas_jax.models import lora as lora_lib

ALGORITHMS = ("grpo", "ppo")


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """One RL step: sample ``group_size`` completions per prompt with the current
  adapter, score them on the host, then ``inner_epochs`` passes over the
  rollouts, each split into ``minibatches`` optimizer steps of
  ``accum_steps`` accumulated micro-batches.

  grpo: group-normalized sequence advantages, no value function.
  ppo: GAE over tokens (``gamma``, ``lam``) from a linear value head on the
  frozen base model's final hidden state, trained with ``value_coef``.
  Both: the clipped ratio objective (``clip_eps``) plus ``kl_coef`` times
  the per-token k3 KL to the frozen base (0 skips the reference pass).
  """

  algorithm: Literal["grpo", "ppo"] = "grpo"
  group_size: int = 4
  clip_eps: float = 0.2
  kl_coef: float = 0.05
  inner_epochs: int = 2
  minibatches: int = 1
  accum_steps: int = 1
  learning_rate: float = 2e-4
  weight_decay: float = 0.0
  max_grad_norm: float = 1.0
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_p: float = 1.0
  value_coef: float = 0.5
  gamma: float = 1.0
  lam: float = 0.95
  advantage_eps: float = 1e-4
  # False: every completion runs max_new_tokens (EOS is sampled like any token);
  # for benchmarks that need fixed-length rollouts.
  stop_at_eos: bool = True
  lora: lora_lib.LoraConfig = lora_lib.LoraConfig()
  # merged | unmerged LoRA in the update's forward/backward (measured: lora.py).
  lora_application: lora_lib.Mode = lora_lib.TRAINING_MODE
  # A group's samples share their prompt: sampling prefills it once per group, and the
  # reference pass and the update run it once per group, with the same tokens,
  # log-probs and gradients (the passes: where each micro-batch's rows on each device
  # hold whole groups; else every row runs its own prompt). False: TRL's work.
  share_prompts: bool = True

  def validate(self, where: str = "RLConfig.") -> "RLConfig":
    """Raises ValueError naming the bad field (as `where` + field) and its fix; returns self."""
    def bad(field, msg):
      raise ValueError(f"{where}{field}={getattr(self, field)!r}: {msg}")

    if self.algorithm not in ALGORITHMS:
      bad("algorithm", f"use one of {ALGORITHMS}")
    if self.group_size < 1:
      bad("group_size", "use >= 1 samples per prompt")
    if self.algorithm == "grpo" and self.group_size < 2:
      bad("group_size", "GRPO compares samples within a group; use >= 2 (or algorithm='ppo')")
    for field in ("inner_epochs", "minibatches", "accum_steps", "max_new_tokens"):
      if int(getattr(self, field)) < 1:
        bad(field, "use an int >= 1")
    for field in ("clip_eps", "learning_rate", "temperature", "max_grad_norm"):
      if not getattr(self, field) > 0:
        bad(field, "must be > 0 (RL samples: temperature 0 would be greedy)")
    for field in ("kl_coef", "weight_decay", "value_coef", "advantage_eps"):
      if not getattr(self, field) >= 0:
        bad(field, "must be >= 0")
    if not 0 < self.top_p <= 1:
      bad("top_p", "must be in (0, 1]")
    for field in ("gamma", "lam"):
      if not 0 <= getattr(self, field) <= 1:
        bad(field, "must be in [0, 1]")
    if self.lora_application not in ("merged", "unmerged"):
      bad("lora_application", "use 'merged' or 'unmerged'")
    if not isinstance(self.share_prompts, bool):
      bad("share_prompts", "use True or False")
    if not isinstance(self.lora, lora_lib.LoraConfig):
      bad("lora", "use an models.lora.LoraConfig")
    return self


# The RLConfig fields an experiment sets (config.optimizers.rl.<field>, same
# names); the rest follow from the component (max_new_tokens, lora).
EXPERIMENT_FIELDS = ("algorithm", "group_size", "inner_epochs", "learning_rate", "kl_coef",
                     "clip_eps", "temperature")


def experiment_defaults() -> dict:
  """The defaults of config.optimizers.rl's RLConfig fields: RLConfig's own."""
  default = RLConfig()
  return {f: getattr(default, f) for f in EXPERIMENT_FIELDS}


def from_experiment(rl, **fixed) -> RLConfig:
  """The RLConfig of `config.optimizers.rl`, validated (errors name the config field)."""
  return RLConfig(**{f: rl[f] for f in EXPERIMENT_FIELDS}, **fixed).validate(
      where="config.optimizers.rl.")
