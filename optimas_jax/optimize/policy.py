"""Policy-gradient updates of a Flax ranking policy against a host-side reward.

The policy scores K options per input (passages, candidate products); the
component deploys its top `picks` options in score order. Training samples
what would be deployed: an ordered pick of `picks` options drawn from the
Plackett-Luce distribution of the scores (Gumbel top-k), whose mode is
exactly the deployed ranking. So the reward is always for an output the
component can produce, under the policy being trained.

Rewards come from the host (rendering a ranking to text and scoring it with
the LRF, or running the system), outside any jitted function: each step is
`sample` (jitted) -> `reward_fn` (host, numpy in and out) -> `update`
(jitted). Both jitted functions are module-level and compile once per shape.
The update is group-normalized REINFORCE (as in GRPO) plus a KL penalty to
the starting policy's first-pick distribution: a conservative step that
stands in for a trust region.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


NEG = -1e9


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """A ranking policy's local step (config.optimizers.policy.<field>, same names)."""

  steps: int = 30
  group_size: int = 8
  learning_rate: float = 0.05
  kl_coef: float = 0.02

  def __post_init__(self):
    for name in ("steps", "group_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"config.optimizers.policy.{name}: must be >= 1, got "
                         f"{getattr(self, name)}")
    if not self.learning_rate > 0:
      raise ValueError(f"config.optimizers.policy.learning_rate: must be > 0, got "
                       f"{self.learning_rate}")
    if not self.kl_coef >= 0:
      raise ValueError(f"config.optimizers.policy.kl_coef: must be >= 0, got {self.kl_coef}")


def masked_log_softmax(logits, mask):
  return jax.nn.log_softmax(jnp.where(mask, logits, NEG), axis=-1)


def plackett_luce_log_prob(logits, mask, orderings):
  """log P(ordering) under Plackett-Luce: (B, K), (B, K), (B, G, P) -> (B, G).

  Position p of a row counts only while the row still has real options
  (p < its number of real options), so rows with fewer than P options are fine.
  """
  scores = jnp.where(mask, logits, NEG)[:, None, :]                     # (B, 1, K)
  picks = orderings.shape[-1]
  real = jnp.sum(mask, axis=-1)[:, None]                                # (B, 1)
  taken = jax.nn.one_hot(orderings, logits.shape[-1], dtype=bool)       # (B, G, P, K)
  before = jnp.cumsum(taken, axis=2) - taken                            # taken earlier
  remaining = mask[:, None, None, :] & (before == 0)
  denom = jax.nn.logsumexp(jnp.where(remaining, scores[:, :, None, :], NEG), axis=-1)
  chosen = jnp.take_along_axis(scores[:, 0, :], orderings.reshape(orderings.shape[0], -1),
                               axis=-1).reshape(orderings.shape)
  valid = jnp.arange(picks)[None, None, :] < real[..., None]
  return jnp.sum(jnp.where(valid, chosen - denom, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=("apply_fn", "group_size", "picks"))
def sample_orderings(params, features, mask, key, *, apply_fn, group_size: int, picks: int):
  """(B, G, picks) orderings by Gumbel top-k: G Plackett-Luce samples per row."""
  logits = jnp.where(mask, apply_fn(params, features), NEG)
  gumbel = jax.random.gumbel(key, (logits.shape[0], group_size, logits.shape[1]))
  return jax.lax.top_k(logits[:, None, :] + gumbel, picks)[1].astype(jnp.int32)


def _loss(params, ref_logp, features, mask, orderings, advantages, *, apply_fn, kl_coef):
  logits = apply_fn(params, features)
  logp = plackett_luce_log_prob(logits, mask, orderings)                # (B, G)
  policy_gradient = -jnp.mean(advantages * logp)
  first = masked_log_softmax(logits, mask)
  kl = jnp.mean(jnp.sum(jnp.where(mask, jnp.exp(first) * (first - ref_logp), 0.0), axis=-1))
  return policy_gradient + kl_coef * kl, kl


@functools.partial(jax.jit, static_argnames=("apply_fn", "config"), donate_argnums=(0, 1))
def update_step(params, opt_state, ref_logp, features, mask, orderings, rewards, *,
                apply_fn, config: PolicyConfig):
  """One group-normalized policy-gradient step on a host-computed reward table."""
  mean = rewards.mean(axis=1, keepdims=True)
  std = rewards.std(axis=1, keepdims=True)
  advantages = (rewards - mean) / (std + 1e-6)   # all-equal groups give 0, not NaN
  (loss, kl), grads = jax.value_and_grad(
      functools.partial(_loss, apply_fn=apply_fn, kl_coef=config.kl_coef), has_aux=True)(
          params, ref_logp, features, mask, orderings, advantages)
  updates, opt_state = optax.adam(config.learning_rate).update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return params, opt_state, {"loss": loss, "kl": kl, "reward": rewards.mean()}


def checked_rewards(reward_fn: Callable[[np.ndarray], np.ndarray], orderings: np.ndarray,
                    step: int) -> np.ndarray:
  """Calls the host reward; its errors and bad values surface, named."""
  try:
    rewards = np.asarray(reward_fn(orderings), dtype=np.float32)
  except Exception as e:
    raise RuntimeError(f"the policy's reward function failed at step {step}: "
                       f"{type(e).__name__}: {e}") from e
  if rewards.shape != orderings.shape[:2]:
    raise ValueError(f"the policy's reward function returned shape {rewards.shape} for "
                     f"orderings {orderings.shape}; it must return one reward per sample "
                     f"{orderings.shape[:2]}")
  if not np.isfinite(rewards).all():
    raise ValueError(f"the policy's reward function returned non-finite rewards at step "
                     f"{step}: {rewards[~np.isfinite(rewards)][:4]}")
  return rewards


def optimize(params, features: np.ndarray, mask: np.ndarray, picks: int,
             reward_fn: Callable[[np.ndarray], np.ndarray], key: jax.Array,
             config: PolicyConfig, apply_fn: Callable[[Any, Any], Any]) -> tuple[Any, dict]:
  """`config.steps` of sample -> host reward -> update; returns (params, metrics).

  `reward_fn(orderings (B, G, picks) int32) -> (B, G)` runs on the host.
  `apply_fn` must be hashable and stable (a module-level jitted function):
  it is a static argument of the compiled steps.
  """
  features, mask = jnp.asarray(features), jnp.asarray(mask, bool)
  params = jax.tree.map(jnp.array, params)        # own copies: the update donates them
  ref_logp = masked_log_softmax(apply_fn(params, features), mask)
  opt_state = optax.adam(config.learning_rate).init(params)
  history = {"loss": [], "kl": [], "reward": []}
  for step in range(config.steps):
    orderings = sample_orderings(params, features, mask, jax.random.fold_in(key, step),
                                 apply_fn=apply_fn, group_size=config.group_size, picks=picks)
    rewards = checked_rewards(reward_fn, np.asarray(orderings), step)
    params, opt_state, metrics = update_step(params, opt_state, ref_logp, features, mask,
                                             orderings, jnp.asarray(rewards),
                                             apply_fn=apply_fn, config=config)
    for name, value in metrics.items():
      history[name].append(value)
  return params, {name: np.asarray(jax.device_get(values)) for name, values in history.items()}
