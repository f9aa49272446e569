"""Policy-gradient updates of a Flax policy against a local reward.

The policy picks one of K options per input (e.g. which passage to pass
on). Each step samples a group of G actions per input, gets their rewards
from the host (rendering a choice to text and scoring it with the LRF is
not JAX, so it goes through `jax.pure_callback`), normalizes rewards within
each group (group-normalized REINFORCE, as in GRPO) and adds a KL penalty
to the starting policy: a conservative step that stands in for a trust
region. The whole update loop is one jitted `lax.scan`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

NEG = -1e9


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  steps: int = 20
  group_size: int = 4
  learning_rate: float = 3e-3
  kl_coef: float = 0.05

  def __post_init__(self):
    for name in ("steps", "group_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")


def masked_log_softmax(logits, mask):
  return jax.nn.log_softmax(jnp.where(mask, logits, NEG), axis=-1)


def make_update(apply_fn: Callable[[Any, jax.Array], jax.Array],
                reward_fn: Callable[[np.ndarray], np.ndarray], cfg: PolicyConfig):
  """Returns jitted `update(params, features, mask, key) -> (params, metrics)`.

  `apply_fn(params, features) -> logits (B, K)`; `mask (B, K)` marks real
  options; `reward_fn(actions (B, G) int32) -> rewards (B, G)` runs on host.
  """
  tx = optax.adam(cfg.learning_rate)

  def host_reward(actions):
    return np.asarray(reward_fn(np.asarray(actions)), dtype=np.float32)

  def loss_fn(params, ref_logp, features, mask, actions, adv):
    logp = masked_log_softmax(apply_fn(params, features), mask)         # (B, K)
    taken = jnp.take_along_axis(logp, actions, axis=1)                  # (B, G)
    pg = -jnp.mean(adv * taken)
    p = jnp.exp(logp)
    kl = jnp.mean(jnp.sum(jnp.where(mask, p * (logp - ref_logp), 0.0), axis=-1))
    return pg + cfg.kl_coef * kl, kl

  @jax.jit
  def update(params, features, mask, key):
    ref_logp = jax.lax.stop_gradient(masked_log_softmax(apply_fn(params, features), mask))
    b = features.shape[0]

    def step(carry, step_key):
      params, opt_state = carry
      logp = masked_log_softmax(apply_fn(params, features), mask)
      actions = jax.random.categorical(step_key, logp[:, None, :], axis=-1,
                                       shape=(b, cfg.group_size)).astype(jnp.int32)
      rewards = jax.pure_callback(host_reward, jax.ShapeDtypeStruct((b, cfg.group_size),
                                                                    jnp.float32), actions)
      mean = rewards.mean(axis=1, keepdims=True)
      std = rewards.std(axis=1, keepdims=True)
      adv = (rewards - mean) / (std + 1e-6)   # all-equal groups give 0 advantage, not NaN
      (loss, kl), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, ref_logp, features, mask, actions, adv)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state), {"loss": loss, "kl": kl, "reward": rewards.mean()}

    keys = jax.random.split(key, cfg.steps)
    (params, _), metrics = jax.lax.scan(step, (params, tx.init(params)), keys)
    return params, metrics

  return update
