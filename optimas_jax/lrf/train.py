"""Train state, the jitted train/eval steps, and the data-parallel trainer.

`train_step(state, batch, rng, update_mask)` is pure: the batch is
(A, G, N, ...) with A micro-batches scanned for gradient accumulation and G
groups split over every device of the ("data", "fsdp") mesh; parameters,
gradients and optimizer moments are split over "fsdp" by the one sharding
rule (core/mesh.fsdp_shardings; `lrf.fsdp`, 1: replicated) and the state is
donated. `Trainer.fit` is the one LRF training loop (lrf.run and the
loop's LocalRewards both call it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from optimas_jax.core.exported import TracedOnce, eval_shape_once
from optimas_jax.core.mesh import (batch_axes, check_fits, fsdp_shardings, make_mesh,
                                   per_device_bytes, place, to_global)
from optimas_jax.lrf import loss as loss_lib
from optimas_jax.lrf.buckets import collate, plan_epoch
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
  # Adam's moments in float32 whatever the parameters' dtype: a bfloat16 moment would
  # round small updates away, and the step returns them in float32 anyway (so a bf16
  # start would compile the step twice).
  opt_state = jax.jit(lambda t: jax.tree.map(
      lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tx.init(t)))(trainable)           # one program, not an eager op per leaf shape
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                    frozen=frozen, opt_state=opt_state)


def update_mask(trainable, num_components: int, only_head: int | None = None):
  """Bool pytree, each leaf broadcastable to its `trainable` leaf: what may change.

  None: everything trainable. `only_head=k`: row k of the stacked heads
  only; the shared layers, LoRA factors and the other heads keep their
  values and their optimizer moments bit for bit. The leaf shapes do not
  depend on `only_head`, so switching masks reuses the compiled step.
  """
  if only_head is not None and not 0 <= only_head < num_components:
    raise ValueError(f"only_head={only_head}: not a component index in "
                     f"[0, {num_components})")

  def leaf(path, x):
    if _is_head(path):
      rows = (np.ones((num_components,), bool) if only_head is None
              else np.arange(num_components) == only_head)
      return rows.reshape((num_components,) + (1,) * (np.ndim(x) - 1))
    return np.asarray(only_head is None)
  return jax.tree_util.tree_map_with_path(leaf, trainable)


def _is_head(path) -> bool:
  """Leaves of the vmapped heads: trainable["params"]["heads"][...], axis 0 = K."""
  keys = [getattr(p, "key", None) for p in path[:2]]
  return keys == ["params", "heads"]


def _select(mask, new, old):
  """`new` where the mask is set, else `old` (exact: where, not a multiply,
  so a NaN update cannot leak into a masked parameter)."""
  return jax.tree.map(lambda m, n, o: jnp.where(m, n, o), mask, new, old)


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


def train_step(state: TrainState, batch, rng, update_mask=None, *, lrf, tx,
               loss_cfg, num_components):
  """One optimizer step over A accumulated micro-batches.

  `update_mask` (see `update_mask()`) limits what the step changes; None
  changes everything trainable.
  """
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
  if update_mask is not None:
    # Masked gradients make clipping see only what may move. Masked updates
    # and moments matter too: AdamW's weight decay and Adam's momentum move
    # a parameter even at zero gradient.
    grads = _select(update_mask, grads, jax.tree.map(jnp.zeros_like, grads))
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  if update_mask is not None:
    trainable = _select(update_mask, trainable, state.trainable)
    # The mask laid over the optimizer state: moments (mu, nu) follow their
    # parameter; counts and other non-parameter fields always advance.
    opt_mask = optax.tree_utils.tree_map_params(
        tx, lambda _, m: m, opt_state, update_mask,
        transform_non_params=lambda v: jax.tree.map(lambda _: True, v))
    opt_state = _select(opt_mask, opt_state, state.opt_state)
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


def steps_per_epoch(groups: Sequence, cfg) -> int:
  """Optimizer steps in one epoch over `groups` (independent of seed and epoch)."""
  per_step = cfg.groups_per_batch * cfg.accum_steps
  return len(plan_epoch(groups, cfg.buckets, per_step, 0, 0))


def raise_if_not_finite(step: int, loss: float, lr: float, grad_norm: float | None = None):
  """The one finiteness check of LRF training, at host reads of the loss."""
  if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
    return
  norm = "" if grad_norm is None else f", grad_norm {grad_norm}"
  raise FloatingPointError(f"LRF training step {step}: loss {loss}{norm}; lower "
                           f"config.lrf.optim.lr (now {lr})")


@dataclasses.dataclass(frozen=True)
class StepEnd:
  """What `Trainer.fit` hands its `on_step` hook after each step.

  `state` is donated to the next step: read or save it inside the hook,
  never keep it. `metrics` are device arrays; read them only when logging.
  """
  step: int               # steps of this schedule done (counts the resumed ones)
  epoch: int
  epoch_end: bool
  last: bool
  state: TrainState
  metrics: dict


class Trainer:
  """Jitted steps on a mesh, host batching, and the frozen-activation cache."""

  def __init__(self, lrf, cfg, num_components: int, total_steps: int,
               mesh: Mesh | None = None, cache: ActivationCache | None = None):
    self.lrf, self.cfg, self.k = lrf, cfg, num_components
    self.mesh = mesh or make_mesh(cfg.fsdp)
    self.total_steps = total_steps
    self.tx = make_optimizer(cfg.optim, total_steps)
    self.loss_cfg = dict(min_gap=cfg.loss.min_gap, margin=cfg.loss.margin,
                         gap_weighting=cfg.loss.gap_weighting,
                         min_weight=cfg.loss.min_weight)
    use_cache = cfg.cache_frozen and lrf.frozen_prefix is not None
    self.cache = cache if cache is not None else (
        ActivationCache(lrf, cfg.buckets, max_bytes=cfg.cache_mb << 20)
        if use_cache else None)
    self.repl = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P(None, batch_axes(self.mesh)))
    self._step = functools.partial(train_step, lrf=lrf, tx=self.tx,
                                   loss_cfg=self.loss_cfg, num_components=num_components)
    self._eval = functools.partial(eval_step, lrf=lrf, loss_cfg=self.loss_cfg,
                                   num_components=num_components)
    # Compiled at the first step, with the state's own shardings.
    self.jitted_step = self.eval_fn = self._init = None
    self._full_mask = None

  def init_state(self, rng, backbone_params=None) -> TrainState:
    """A fresh state on the mesh, in buffers of its own (the step donates the state;
    the registry shares its backbone arrays across callers)."""
    if jax.process_count() == 1:
      if self._init is None:                 # built once: later inits reuse the program
        self._init = self._init_program(rng, backbone_params)
      state = self._init(rng, backbone_params)
    else:
      state = init_state(self.lrf, self.tx, rng, backbone_params)
      # Copied where they lie first: a resharding put may keep device 0's buffer,
      # which the first donated step would then delete.
      state = jax.device_put(state, may_alias=False)
      state = place(state, fsdp_shardings(state, self.mesh))
    logging.info("%s", self.memory_estimate(state))
    return state

  def _init_program(self, rng, backbone_params) -> TracedOnce:
    """The whole init (heads, LoRA factors, Adam's moments, the backbone's copy) as one
    program kept on disk: a dozen small programs traced and lowered per process cost
    0.3 s of a warm set-up. Its outputs are new buffers, placed by the sharding rule."""
    fn = functools.partial(init_state, self.lrf, self.tx)
    static_key = f"{self.lrf!r}|optim={self.cfg.optim!r}|total_steps={self.total_steps}"
    shapes = eval_shape_once(fn, "lrf_state_shapes", static_key, rng, backbone_params)
    return TracedOnce(fn, "lrf_init_state", f"{static_key}|mesh={dict(self.mesh.shape)}",
                      in_shardings=self.repl, out_shardings=fsdp_shardings(shapes, self.mesh))

  def memory_estimate(self, state: TrainState, limit: int | None = None) -> str:
    """Per-device bytes of the placed state and a step's activations, checked against
    the device's memory before anything compiles (MemoryError naming the fields)."""
    cfg = self.cfg
    rows = cfg.groups_per_batch * cfg.max_candidates // max(1, self.mesh.devices.size)
    hidden = self.lrf.model.backbone.config.hidden_size
    # Kept for the backward pass: ~16 hidden-sized vectors per token per layer (attention
    # scores, MLP's 4x hidden, norms), float32.
    activations = max(rows, 1) * cfg.max_len * hidden * 16 * 4 * self.lrf.num_layers
    return check_fits(
        {"parameters": per_device_bytes(state.trainable) + per_device_bytes(state.frozen),
         "optimizer state": per_device_bytes(state.opt_state), "activations": activations},
        "LRF training", "raise config.lrf.fsdp (split parameters and optimizer state) or "
        "lower config.lrf.groups_per_batch / config.lrf.max_len (activations)", limit)

  def update_mask(self, trainable, only_head: int | None = None):
    """`update_mask()` for this trainer's K heads, on the mesh."""
    return to_global(update_mask(trainable, self.k, only_head), self.repl)

  def _compile(self, state: TrainState) -> None:
    """The jitted train and eval steps, with the state's shardings in and out."""
    shardings = jax.tree.map(lambda x: x.sharding, state)
    # The update mask is a traced argument: one compiled step for every mask.
    # Traced once per machine (core/exported.py): the key names what the trace reads.
    static_key = (f"{self.lrf!r}|loss={sorted(self.loss_cfg.items())}|optim={self.cfg.optim!r}"
                  f"|total_steps={self.total_steps}|K={self.k}|mesh={dict(self.mesh.shape)}")
    self.jitted_step = TracedOnce(
        self._step, "lrf_train_step", static_key,
        in_shardings=(shardings, self.data, self.repl, self.repl),
        out_shardings=(shardings, self.repl), donate_argnums=(0,),
        compiler_options=self.lrf.train_compiler_options)
    self.eval_fn = jax.jit(self._eval, in_shardings=(shardings.trainable, shardings.frozen,
                                                     self.data), out_shardings=self.repl,
                           compiler_options=self.lrf.compiler_options)

  def step_fn(self, state: TrainState, batch, rng, update_mask=None):
    """(state, metrics) after one step; `update_mask` None trains everything."""
    update_mask = self._ready(state, update_mask)
    return self.jitted_step(state, batch, rng, update_mask)

  def precompile(self, state: TrainState, batch, rng, update_mask=None) -> None:
    """The step program for this batch's shapes, ready before the first step (traced or
    read from disk, compiled or loaded), without running it or touching ``state``."""
    update_mask = self._ready(state, update_mask)
    self.jitted_step.precompile(state, batch, rng, update_mask)

  def _ready(self, state: TrainState, update_mask):
    """The step built (for the state's shardings, on first use) and the update mask to
    pass it (None: train everything)."""
    if self.jitted_step is None:
      self._compile(state)
    if update_mask is None:
      if self._full_mask is None:
        self._full_mask = self.update_mask(state.trainable)
      update_mask = self._full_mask
    return update_mask

  def fit(self, state: TrainState, groups: Sequence, epochs: int, plan_seed: int, *,
          start_step: int = 0, update_mask=None, rng=None,
          on_step: Callable[[StepEnd], None] | None = None) -> tuple[TrainState, dict]:
    """`epochs` passes over `groups`; returns (state, summary).

    Epoch e visits `plan_epoch(groups, ..., plan_seed, e)`, so a resumed run
    (`start_step` steps of this schedule already done) knows its place from
    the step count alone. The loss is checked for NaN/inf at every epoch
    end (one host read per epoch). Summary: steps run, mean step loss,
    pairwise accuracy and pairs over those steps.
    """
    cfg = self.cfg
    per_step = cfg.groups_per_batch * cfg.accum_steps
    epoch_steps = steps_per_epoch(groups, cfg)
    total = epoch_steps * epochs
    rng = jax.random.PRNGKey(0) if rng is None else rng
    pending, plan = [], None
    loss_sum, correct, pairs, steps = 0.0, 0.0, 0.0, 0
    for step in range(start_step, total):
      epoch, i = divmod(step, epoch_steps)
      if i == 0 or plan is None:
        plan = plan_epoch(groups, cfg.buckets, per_step, plan_seed, epoch)
      length, idxs = plan[i]
      state, metrics = self.step_fn(state, self.batch(groups, idxs, length), rng,
                                    update_mask)
      done = step + 1
      pending.append((done, metrics["loss"], metrics["correct"], metrics["pairs"]))
      epoch_end, last = done % epoch_steps == 0, done == total
      if epoch_end or last:
        for at, loss, right, count in jax.device_get(pending):
          raise_if_not_finite(at, float(loss), cfg.optim.lr)
          loss_sum += float(loss)
          correct += float(np.sum(right))
          pairs += float(np.sum(count))
          steps += 1
        pending = []
      if on_step is not None:
        on_step(StepEnd(done, epoch, epoch_end, last, state, metrics))
    return state, {"steps": steps, "loss": loss_sum / max(steps, 1),
                   "accuracy": correct / max(pairs, 1.0), "pairs": pairs}

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
    return to_global(host, self.data)

  def evaluate(self, state, groups, plan) -> dict[str, list[float]]:
    """Held-out per-component metrics over `plan` [(length, idxs)]."""
    total = None
    for length, idxs in plan:
      b = self.batch(groups, idxs, length, accum=1,
                     micro=self.cfg.groups_per_batch * self.cfg.accum_steps)
      if self.eval_fn is None:
        self._compile(state)
      s = self.eval_fn(state.trainable, state.frozen, b)
      total = s if total is None else jax.tree.map(jnp.add, total, s)
    if total is None:
      return {}
    return summarize(jax.device_get(total))
