"""Train state, the jitted train/eval steps, and the data-parallel trainer.

`train_step(state, batch, rng)` is pure: the batch is (A, G, N, ...) with A
micro-batches scanned for gradient accumulation and G groups sharded over
the ("data",) mesh; params are replicated and the state is donated.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from optimas_jax.lrf import loss as loss_lib
from optimas_jax.lrf.buckets import collate
from optimas_jax.lrf.cache import ActivationCache


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  trainable: Any          # {"params": heads (+ top layers), "lora": {...}}
  frozen: Any             # never reaches the optimizer
  opt_state: Any


def make_optimizer(optim, total_steps: int) -> optax.GradientTransformation:
  """AdamW with warmup + cosine (or constant) schedule and norm clipping."""
  warmup = min(optim.warmup_steps, max(total_steps - 1, 0))
  if optim.schedule == "cosine":
    sched = optax.warmup_cosine_decay_schedule(
        0.0, optim.lr, warmup, max(total_steps, warmup + 1), end_value=0.1 * optim.lr)
  else:
    sched = optax.join_schedules(
        [optax.linear_schedule(0.0, optim.lr, max(warmup, 1)),
         optax.constant_schedule(optim.lr)], [max(warmup, 1)])
  # Decay matrices only: biases, norms and the LoRA factors' scale stay free.
  decay_mask = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
  return optax.chain(
      optax.clip_by_global_norm(optim.clip_norm),
      optax.adamw(sched, b1=optim.b1, b2=optim.b2,
                  weight_decay=optim.weight_decay, mask=decay_mask))


def init_state(lrf, tx, rng, backbone_params=None) -> TrainState:
  trainable, frozen = lrf.init(rng, backbone_params)
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                    frozen=frozen, opt_state=tx.init(trainable))


def _feats(micro):
  """Flatten (G, N, ...) model inputs to (G*N, ...)."""
  keys = [k for k in ("tokens", "hidden", "pooled", "mask") if k in micro]
  return {k: micro[k].reshape((-1,) + micro[k].shape[2:]) for k in keys}


def _micro(trainable, frozen, micro, lrf, loss_cfg, num_components):
  """Sum (not mean) of the weighted pair losses of one micro-batch."""
  variables = lrf.merge(trainable, frozen)
  g, n = micro["mc"].shape
  comp = jnp.repeat(micro["component"], n)
  r = lrf.rewards(variables, _feats(micro), comp).reshape(g, n)
  mean, aux = loss_lib.grouped_bt(r, micro["mc"], micro["valid"], **loss_cfg)
  denom = aux["denom"]
  stats = loss_lib.pair_stats(aux, micro["component"], num_components)
  return mean * denom, (denom, stats)


def train_step(state: TrainState, batch, rng, *, lrf, tx, loss_cfg,
               num_components):
  """One optimizer step over A accumulated micro-batches."""
  del rng  # deterministic model (no dropout); kept for the step signature
  grad_fn = jax.value_and_grad(_micro, has_aux=True)

  def body(carry, micro):
    g_acc, l_acc, d_acc, s_acc = carry
    (l, (d, s)), g = grad_fn(state.trainable, state.frozen, micro, lrf,
                             loss_cfg, num_components)
    add = lambda a, b: jax.tree.map(jnp.add, a, b)
    return (add(g_acc, g), l_acc + l, d_acc + d, add(s_acc, s)), None

  zeros_g = jax.tree.map(jnp.zeros_like, state.trainable)
  zeros_s = {k: jnp.zeros((num_components,), jnp.float32)
             for k in ("pairs", "correct", "nll", "gap")}
  (g_sum, l_sum, d_sum, stats), _ = jax.lax.scan(
      body, (zeros_g, jnp.zeros(()), jnp.zeros(()), zeros_s), batch)
  # Normalise by all weighted pairs of the step, so accumulation equals one
  # big batch; 0 (not NaN) when the step holds no valid pair.
  inv = jnp.where(d_sum > 0, 1.0 / jnp.where(d_sum > 0, d_sum, 1.0), 0.0)
  grads = jax.tree.map(lambda x: x * inv, g_sum)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  new_state = state.replace(step=state.step + 1, trainable=trainable,
                            opt_state=opt_state)
  metrics = dict(loss=l_sum * inv, grad_norm=optax.tree.norm(grads),
                 head_grad_norm=_per_head_norm(grads), **stats)
  return new_state, metrics


def _per_head_norm(grads):
  """(K,) gradient norm of each component's head (its own gradient share)."""
  leaves = jax.tree.leaves(grads["params"]["heads"])
  return jnp.sqrt(sum(jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
                      for x in leaves))


def eval_step(trainable, frozen, batch, *, lrf, loss_cfg, num_components):
  """Per-component sums for held-out accuracy, loss, gap and Kendall tau."""
  def one(micro):
    variables = lrf.merge(trainable, frozen)
    g, n = micro["mc"].shape
    comp = jnp.repeat(micro["component"], n)
    r = lrf.rewards(variables, _feats(micro), comp).reshape(g, n)
    _, aux = loss_lib.grouped_bt(r, micro["mc"], micro["valid"], **loss_cfg)
    s = loss_lib.pair_stats(aux, micro["component"], num_components)
    s["tau_num"], s["tau_pairs"] = loss_lib.group_kendall_sums(
        r, micro["mc"], micro["valid"], micro["component"], num_components,
        loss_cfg["min_gap"])
    return s
  per = jax.vmap(one)(batch)
  return jax.tree.map(lambda x: x.sum(0), per)


def summarize(sums: dict[str, np.ndarray]) -> dict[str, list[float]]:
  """Per-component ratios from summed stats (NaN-free: 0 where no pairs)."""
  pairs = np.asarray(sums["pairs"], np.float64)
  safe = np.maximum(pairs, 1)
  out = dict(pairs=pairs.tolist(),
             accuracy=(np.asarray(sums["correct"]) / safe).tolist(),
             loss=(np.asarray(sums["nll"]) / safe).tolist(),
             score_gap=(np.asarray(sums["gap"]) / safe).tolist())
  if "tau_num" in sums:
    tp = np.maximum(np.asarray(sums["tau_pairs"], np.float64), 1)
    out["kendall_tau"] = (np.asarray(sums["tau_num"]) / tp).tolist()
  return out


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


class Trainer:
  """Jitted steps on a mesh, host batching, and the frozen-activation cache."""

  def __init__(self, lrf, cfg, num_components: int, total_steps: int,
               mesh: Mesh | None = None, cache: ActivationCache | None = None):
    self.lrf, self.cfg, self.k = lrf, cfg, num_components
    self.mesh = mesh or make_mesh()
    self.tx = make_optimizer(cfg.optim, total_steps)
    self.loss_cfg = dict(min_gap=cfg.loss.min_gap, margin=cfg.loss.margin,
                         gap_weighting=cfg.loss.gap_weighting,
                         min_weight=cfg.loss.min_weight)
    use_cache = cfg.cache_frozen and lrf.frozen_prefix is not None
    self.cache = cache if cache is not None else (
        ActivationCache(lrf, cfg.buckets) if use_cache else None)
    self.repl = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P(None, "data"))
    step = functools.partial(train_step, lrf=lrf, tx=self.tx,
                             loss_cfg=self.loss_cfg, num_components=num_components)
    self.step_fn = jax.jit(step, in_shardings=(self.repl, self.data, self.repl),
                           out_shardings=(self.repl, self.repl),
                           donate_argnums=(0,))
    ev = functools.partial(eval_step, lrf=lrf, loss_cfg=self.loss_cfg,
                           num_components=num_components)
    self.eval_fn = jax.jit(ev, in_shardings=(self.repl, self.repl, self.data),
                           out_shardings=self.repl)

  def init_state(self, rng, backbone_params=None) -> TrainState:
    state = init_state(self.lrf, self.tx, rng, backbone_params)
    # Own copies: the step donates the state, and the registry caches and
    # shares its backbone arrays across callers.
    state = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
    return jax.device_put(state, self.repl)

  def prepare(self, groups, frozen):
    """Fills the activation cache for these groups (no-op without a cache)."""
    if self.cache is not None:
      self.cache.fill(frozen, {k: ids for g in groups
                               for k, ids in zip(g.keys, g.ids)})

  def batch(self, groups, idxs, length, accum=None, micro=None):
    """Device batch for groups[idxs]: cached features or tokens."""
    cfg = self.cfg
    accum = cfg.accum_steps if accum is None else accum
    micro = cfg.groups_per_batch if micro is None else micro
    host, keys = collate(groups, idxs, length, accum, micro,
                         cfg.max_candidates, self.lrf.pad_id)
    if self.cache is not None:
      feats = self.cache.lookup(keys, length)
      del host["tokens"]
      if self.cache.pooled:
        del host["mask"]
        host["pooled"] = feats
      else:
        host["hidden"] = feats
    return jax.device_put(host, self.data)

  def evaluate(self, state, groups, plan) -> dict[str, list[float]]:
    """Held-out per-component metrics over `plan` [(length, idxs)]."""
    total = None
    for length, idxs in plan:
      b = self.batch(groups, idxs, length, accum=1,
                     micro=self.cfg.groups_per_batch * self.cfg.accum_steps)
      s = self.eval_fn(state.trainable, state.frozen, b)
      total = s if total is None else jax.tree.map(jnp.add, total, s)
    if total is None:
      return {}
    return summarize(jax.device_get(total))
