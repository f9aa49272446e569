"""The jitted RL update: train state, reference scoring pass, update step.

``update_step(state, batch, base_params)`` is pure: the batch is (A, M, ...)
with A micro-batches accumulated by ``lax.scan`` and M rows split over every
device of the ("data", "fsdp") mesh; the state (adapter, value head, AdamW
moments, step) is replicated and donated, the base split over "fsdp". The base weights are an argument, never
differentiated and never in the optimizer state: ``jax.grad`` is taken
with respect to ``state.trainable`` only.

The loss of a minibatch is a token-level mean: each micro-batch adds its
masked token sum divided by the minibatch's real-token count, so the
accumulated gradient equals the gradient over the whole minibatch, and the
result does not depend on how rows are split across micro-batches or
devices (padding rows have an all-zero mask and add nothing).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from optimas_jax.core.exported import TracedOnce
from optimas_jax.core.mesh import batch_axes, fsdp_shardings, make_mesh, place, to_global
from optimas_jax.rl import objective
from optimas_jax.rl.config import RLConfig

__all__ = ["RLState", "make_mesh", "make_optimizer", "init_state", "score_rollout",
           "update_step", "Updater"]


@flax.struct.dataclass
class RLState:
  step: jax.Array
  trainable: Any       # {"lora": adapter["layers"], "value_head": {"w": (H,), "b": ()} or {}}
  opt_state: Any


def make_optimizer(config: RLConfig) -> optax.GradientTransformation:
  """AdamW at a constant rate after global-norm clipping, over the trainable tree."""
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.adamw(config.learning_rate, weight_decay=config.weight_decay))


def init_state(config: RLConfig, tx, adapter, hidden_size: int) -> RLState:
  """State from an adapter (its factors are copied: the step donates the state)."""
  value_head = ({"w": jnp.zeros((hidden_size,), jnp.float32), "b": jnp.zeros((), jnp.float32)}
                if config.algorithm == "ppo" else {})
  trainable = {"lora": jax.tree.map(lambda x: jnp.array(x, jnp.float32, copy=True),
                                    adapter["layers"]),
               "value_head": value_head}
  return RLState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                 opt_state=tx.init(trainable))


def _value(value_head, features):
  return features @ value_head["w"] + value_head["b"]


def score_rollout(base_params, trainable, rollout, *, module, config: RLConfig,
                  prompt_group: int = 1):
  """Reference pass over a rollout (rows sharded): the frozen base model's
  log-probs (for the KL) and, for PPO, its completion hidden states (the
  value head's features) and the current value estimates. ``prompt_group``
  > 1: rows come in runs of that many equal prompts, each run once."""
  out = {}
  hidden = objective.completion_hidden(module, base_params, rollout["prompt_ids"],
                                       rollout["prompt_mask"], rollout["completion_ids"],
                                       rollout["completion_mask"], prompt_group)
  if config.kl_coef > 0:
    out["ref_logprobs"] = objective.logprobs_from_hidden(
        module, base_params, hidden, rollout["completion_ids"], rollout["completion_mask"],
        config.temperature)
  if config.algorithm == "ppo":
    features = hidden.astype(jnp.float32)
    out["value_features"] = features
    out["values"] = _value(trainable["value_head"], features) * rollout["completion_mask"]
  return out


def _micro_loss(trainable, base_params, micro, num_tokens, *, module, config: RLConfig,
                prompt_group: int):
  adapter = {"layers": trainable["lora"], "scaling": config.lora.scaling}
  logp = objective.adapted_token_logprobs(module, base_params, adapter, micro,
                                          config.temperature, config.lora_application,
                                          prompt_group)
  mask = micro["completion_mask"].astype(jnp.float32)
  per_token, clipped = objective.clipped_surrogate(logp, micro["old_logprobs"],
                                                   micro["advantages"], config.clip_eps)
  sums = {"policy_loss": (per_token * mask).sum(),
          "clipped": (clipped * mask).sum()}
  if config.kl_coef > 0:
    kl = objective.k3_kl(logp, micro["ref_logprobs"])
    sums["kl"] = (kl * mask).sum()
    per_token = per_token + config.kl_coef * kl
  loss = (per_token * mask).sum() / num_tokens
  if config.algorithm == "ppo":
    values = _value(trainable["value_head"], micro["value_features"])
    value_loss = 0.5 * jnp.square(values - micro["returns"])
    sums["value_loss"] = (value_loss * mask).sum()
    loss = loss + config.value_coef * sums["value_loss"] / num_tokens
  sums["loss"] = loss
  return loss, sums


def update_step(state: RLState, batch, base_params, *, module, config: RLConfig, tx,
                prompt_group: int = 1):
  """One optimizer step over a minibatch (A, M, ...): (new state, metrics).

  ``prompt_group`` > 1: each micro-batch's rows (on each device) come in runs of
  that many equal prompts, and each run's prompt goes through the model once;
  the loss and gradients are the full-sequence pass's.
  """
  num_tokens = jnp.maximum(batch["completion_mask"].astype(jnp.float32).sum(), 1.0)
  grad_fn = jax.grad(functools.partial(_micro_loss, module=module, config=config,
                                       prompt_group=prompt_group), has_aux=True)

  def accumulate(carry, micro):
    grads, sums = carry
    g, s = grad_fn(state.trainable, base_params, micro, num_tokens)
    return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, s)), None

  first = jax.tree.map(lambda x: x[0], batch)
  sums_shape = jax.eval_shape(grad_fn, state.trainable, base_params, first, num_tokens)[1]
  zeros = (jax.tree.map(jnp.zeros_like, state.trainable),
           jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape))
  (grads, sums), _ = jax.lax.scan(accumulate, zeros, batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  metrics = {"loss": sums["loss"], "policy_loss": sums["policy_loss"] / num_tokens,
             "clip_fraction": sums["clipped"] / num_tokens,
             "grad_norm": optax.tree.norm(grads), "tokens": num_tokens}
  for key in ("kl", "value_loss"):
    if key in sums:
      metrics[key] = sums[key] / num_tokens
  return RLState(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics


@functools.lru_cache(maxsize=16)
def _jitted(module, config: RLConfig, mesh: Mesh, max_traces: int | None, prompt_group: int):
  """(tx, update, score) jitted once per (module, config, mesh, prompt group): trainers
  built again for the same model and config reuse the compiled programs."""
  tx = make_optimizer(config)
  axes = batch_axes(mesh)
  replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P(axes))
  micro_rows = NamedSharding(mesh, P(None, axes))

  def step(state, batch, base_params):
    return update_step(state, batch, base_params, module=module, config=config, tx=tx,
                       prompt_group=prompt_group)

  if max_traces is not None:
    import chex  # pylint: disable=import-outside-toplevel
    step = chex.assert_max_traces(step, n=max_traces)
  # The base comes in with its own (fsdp) shardings (None: the argument's). Traced
  # once per machine (core/exported.py): the key names what the traces read.
  static_key = f"{module!r}|{config!r}|mesh={dict(mesh.shape)}|prompt_group={prompt_group}"
  update = TracedOnce(step, "rl_update_step", static_key,
                      in_shardings=(replicated, micro_rows, None),
                      out_shardings=(replicated, replicated), donate_argnums=(0,))
  score = TracedOnce(functools.partial(score_rollout, module=module, config=config,
                                       prompt_group=prompt_group),
                     "rl_score_rollout", static_key, in_shardings=(None, replicated, rows),
                     out_shardings=rows)
  return tx, update, score


class Updater:
  """``score_rollout`` and ``update_step`` jitted on a ("data", "fsdp") mesh.

  Rows of the rollout (and M of an (A, M, ...) minibatch) are split over
  every device; the frozen base is split over "fsdp" by the one sharding
  rule (core/mesh.fsdp_shardings) and gathered layer by layer where the
  step uses it, so it exists once per device set; the state (adapter, value
  head, moments: small) is replicated. ``max_traces`` (tests) wraps the
  update in ``chex.assert_max_traces``.
  """

  def __init__(self, module, config: RLConfig, mesh: Mesh | None = None,
               max_traces: int | None = None):
    self.module, self.config = module, config.validate()
    self.mesh = mesh or make_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.rows = NamedSharding(self.mesh, P(batch_axes(self.mesh)))
    self.micro_rows = NamedSharding(self.mesh, P(None, batch_axes(self.mesh)))
    self._max_traces = max_traces
    self.tx, self.update, self.score = _jitted(module, config, self.mesh, max_traces, 1)

  def programs(self, prompt_group: int = 1) -> tuple:
    """(update, score) for rollouts whose rows come in runs of ``prompt_group``
    equal prompts (on every device, in every micro-batch); 1: any rows."""
    if prompt_group == 1:
      return self.update, self.score
    return _jitted(self.module, self.config, self.mesh, self._max_traces, prompt_group)[1:]

  @property
  def devices(self) -> int:
    return self.mesh.devices.size

  def init_state(self, adapter, hidden_size: int) -> RLState:
    return to_global(init_state(self.config, self.tx, adapter, hidden_size), self.replicated)

  def place_base(self, base_params):
    """The base weights on the mesh, split over "fsdp" (no copy when already there)."""
    return place(base_params, fsdp_shardings(base_params, self.mesh))
