"""Per-token quantities of the policy-gradient update (pure jnp functions).

Layout: a rollout row is a left-padded prompt (P tokens) followed by a
right-padded completion (T tokens, the sampled tokens including a stop
token). ``completion_mask`` is 1 on sampled tokens and 0 on padding; the
prompt never enters a loss. Position P - 1 + t (the last prompt token for
t = 0) predicts completion token t.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from optimas_jax.models import lora


def completion_hidden(module, variables, prompt_ids, prompt_mask, completion_ids,
                      completion_mask, group: int = 1):
  """Final-normed hidden states (B, T, H) at the positions that predict the completion.

  ``group`` > 1: rows come in runs of ``group`` with the same prompt, which runs
  once per run (LlamaDecoder.completion_states).
  """
  return module.apply(variables, prompt_ids, prompt_mask, completion_ids, completion_mask,
                      group, method=module.completion_states)


def logprobs_from_hidden(module, variables, hidden, completion_ids, completion_mask,
                         temperature=1.0):
  """log p(completion token t) under softmax(logits / temperature); 0 where masked."""
  logits = module.apply(variables, hidden, method=module.project) / temperature
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, completion_ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return jnp.where(completion_mask > 0, picked, 0.0).astype(jnp.float32)


def token_logprobs(module, params, prompt_ids, prompt_mask, completion_ids, completion_mask,
                   temperature=1.0, group: int = 1):
  """Teacher-forced (B, T) float32 log-probs of the completion tokens (0 on padding).

  ``temperature`` must be the sampling temperature for the result to match
  the sampler's log-probs (models/generate.py scores under logits / T).
  """
  hidden = completion_hidden(module, params, prompt_ids, prompt_mask, completion_ids,
                             completion_mask, group)
  return logprobs_from_hidden(module, params, hidden, completion_ids, completion_mask,
                              temperature)


def adapted_token_logprobs(module, base_params, adapter, batch, temperature,
                           mode: lora.Mode = lora.TRAINING_MODE, group: int = 1):
  """``token_logprobs`` of base + adapter (``mode``: merged or unmerged) on a batch dict."""
  if mode == "merged":
    variables, applied = lora.merge(base_params, adapter), contextlib.nullcontext()
  else:
    variables, applied = base_params, lora.unmerged(adapter)
  with applied:
    return token_logprobs(module, variables, batch["prompt_ids"], batch["prompt_mask"],
                          batch["completion_ids"], batch["completion_mask"], temperature,
                          group)


def k3_kl(logp, ref_logp):
  """Per-token KL(policy || reference) estimator k3 = exp(r) - r - 1, r = ref - logp (>= 0)."""
  r = ref_logp - logp
  return jnp.exp(r) - r - 1.0


def clipped_surrogate(logp, old_logp, advantages, clip_eps):
  """PPO's clipped per-token loss -min(rho A, clip(rho, 1 -+ eps) A) and where clipping binds."""
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * advantages
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
  return -jnp.minimum(unclipped, clipped), clipped < unclipped


def group_advantages(rewards, group_size: int, eps: float = 1e-4):
  """GRPO advantages (r - group mean) / (group std + eps); rows grouped contiguously.

  ``rewards`` (N,) with N = prompts x group_size, each prompt's samples
  adjacent. A group whose rewards are all equal gets 0 (no signal).
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1 or rewards.shape[0] % group_size:
    raise ValueError(f"rewards of shape {rewards.shape}: expected (prompts x group_size,) "
                     f"with group_size={group_size}")
  groups = rewards.reshape(-1, group_size)
  centered = groups - groups.mean(axis=1, keepdims=True)
  return (centered / (groups.std(axis=1, keepdims=True) + eps)).reshape(-1)


def gae(rewards, values, mask, gamma: float, lam: float):
  """Generalized advantage estimation over tokens with a terminal sequence reward.

  ``rewards`` (B,) is paid at each row's last real token; ``values`` and
  ``mask`` are (B, T) over right-padded completions. Returns (advantages,
  returns), both (B, T), 0 on padding.
  """
  mask = mask.astype(jnp.float32)
  length = mask.sum(axis=1)
  last = jnp.arange(mask.shape[1])[None] == (length - 1)[:, None]
  token_rewards = jnp.where(last, rewards[:, None], 0.0)
  next_mask = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
  next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
  deltas = token_rewards + gamma * next_values * next_mask - values

  def back(carry, x):
    delta, keep = x
    adv = delta + gamma * lam * keep * carry
    return adv, adv

  _, adv = jax.lax.scan(back, jnp.zeros_like(rewards, jnp.float32),
                        (deltas.T, next_mask.T), reverse=True)
  adv = adv.T * mask
  return adv, (adv + values) * mask


def whiten(x, mask, eps: float = 1e-8):
  """(x - mean) / std over the masked entries; 0 where masked."""
  mask = mask.astype(jnp.float32)
  n = jnp.maximum(mask.sum(), 1.0)
  mean = (x * mask).sum() / n
  var = (((x - mean) * mask) ** 2).sum() / n
  return (x - mean) * jax.lax.rsqrt(var + eps) * mask
