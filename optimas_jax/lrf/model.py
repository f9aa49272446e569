"""LRF model: a registry backbone + K linear heads as one vmapped module.

Parameters are split into a trainable and a frozen pytree (by config:
heads | top-N layers | LoRA | full), so frozen weights never reach the
optimizer. LoRA is applied functionally: `merge` adds scale * A @ B to the
targeted kernels before the forward pass, the backbone code is untouched.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from optimas_jax.core import exported
from optimas_jax.models import xla_cpu
from optimas_jax.models.registry import with_compute_dtype


class Head(nn.Module):
  """One component's linear reward head."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.float32)(x)[..., 0]


def pool(hidden, mask, pooling: str):
  """(B, L, H) -> (B, H) float32. Right padding assumed."""
  hidden = hidden.astype(jnp.float32)
  if pooling == "mean":
    m = mask.astype(jnp.float32)[..., None]
    return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
  if pooling == "cls":
    return hidden[:, 0]
  if pooling == "last":
    last = jnp.maximum(mask.astype(jnp.int32).sum(1) - 1, 0)
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  raise ValueError(f"config.lrf.pooling: unknown {pooling!r}")


class LRFModel(nn.Module):
  """score(tokens, mask, component_ids) -> (B,); layer ranges for caching."""

  backbone: nn.Module
  num_components: int
  num_layers: int
  pooling: str = "mean"
  kind: str = "encoder"

  def setup(self):
    heads = nn.vmap(Head, variable_axes={"params": 0},
                    split_rngs={"params": True}, in_axes=None,
                    axis_size=self.num_components)
    self.heads = heads()

  def lower(self, tokens, mask, stop: int):
    """Embeddings + layers [0, stop): the part a frozen prefix caches."""
    return self.backbone.run_layers(self.backbone.embed(tokens), mask, 0, stop)

  def upper(self, hidden, mask, start: int):
    """Layers [start, n), final norm (decoders), pooling -> (B, H)."""
    hidden = self.backbone.run_layers(hidden, mask, start, self.num_layers)
    if self.kind == "decoder":
      hidden = self.backbone.norm(hidden)
    return pool(hidden, mask, self.pooling)

  def head(self, pooled, component_ids):
    """All K heads on every row, then each row's own head: (B,)."""
    r = self.heads(pooled)                      # (K, B)
    return r[component_ids, jnp.arange(r.shape[1])]

  def lower_and_upper(self, tokens, mask, component_ids):
    """The pooled features the heads read (B, hidden)."""
    del component_ids
    return self.upper(self.lower(tokens, mask, 0), mask, 0)

  def __call__(self, tokens, mask, component_ids):
    return self.head(self.upper(self.lower(tokens, mask, 0), mask, 0),
                     component_ids)


@dataclasses.dataclass(frozen=True)
class LRF:
  """Static description of an LRF: the module and how it is trained."""
  model: LRFModel
  trainable: str = "top"
  top_layers: int = 1
  lora_rank: int = 8
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("query", "value")
  pad_id: int = 0

  @property
  def num_layers(self) -> int:
    return self.model.num_layers

  @property
  def frozen_prefix(self) -> int | None:
    """Lower layers whose activations never change (None: embeddings train)."""
    if self.trainable == "heads":
      return self.num_layers
    if self.trainable == "top":
      return max(self.num_layers - self.top_layers, 0)
    return None

  @property
  def compiler_options(self) -> dict | None:
    """Per-program XLA options for this backbone's programs (models/xla_cpu.py)."""
    return xla_cpu.encoder_options(self.model.backbone.config.dtype)

  @property
  def train_compiler_options(self) -> dict | None:
    """The same for the training step (forward + backward)."""
    return xla_cpu.encoder_options(self.model.backbone.config.dtype, training=True)

  def is_trainable(self, path: tuple[str, ...]) -> bool:
    if path[0] == "heads" or self.trainable == "full":
      return True
    if self.trainable == "top" and path[0] == "backbone":
      top = {f"layer_{i}" for i in range(self.frozen_prefix, self.num_layers)}
      return path[1] in top or (self.model.kind == "decoder" and path[1] == "norm")
    return False

  # -- parameters ----------------------------------------------------------

  def init(self, rng, backbone_params=None, seq_len: int = 8):
    """(trainable, frozen) pytrees; `backbone_params` (pretrained) go straight in.

    With pretrained weights only the heads are initialised (the same values as
    a whole-model init with `rng`: Flax derives a submodule's key from its
    path); the backbone's shapes are checked against an abstract init
    (`jax.eval_shape`, kept on disk by `core/exported.eval_shape_once`), never
    computed. A random backbone that is then replaced cost ~10 s of eager init
    for MiniLM.
    """
    k_model, k_lora = jax.random.split(rng)
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    args = (tokens, jnp.ones_like(tokens), jnp.zeros((1,), jnp.int32))
    if backbone_params is None:
      params = dict(self.model.init(k_model, *args)["params"])
      return self.split(params, k_lora)
    shapes = exported.eval_shape_once(self.model.init, "lrf_init_shapes",
                                      f"{self.model!r}|seq_len={seq_len}", k_model, *args)
    shapes = shapes["params"]
    bp = backbone_params.get("params", backbone_params)
    # The heads read a pooled (B, hidden_size) vector; their init needs its shape only.
    hidden = jax.ShapeDtypeStruct((1, self.model.backbone.config.hidden_size), jnp.float32)
    # Jitted: eager Flax init dispatches (and compiles) op by op, 3x slower.
    init_heads = jax.jit(functools.partial(self.model.init, method=type(self.model).head))
    heads = init_heads(k_model, jnp.zeros(hidden.shape, hidden.dtype), args[2])["params"]
    params = {**heads, "backbone": _check_same_structure(shapes["backbone"], bp)}
    if set(params) != set(shapes):
      raise ValueError(f"LRF params {sorted(shapes)}: expected backbone and heads only")
    return self.split(params, k_lora)

  def split(self, params, lora_rng):
    flat = traverse_util.flatten_dict(params)
    train = {k: v for k, v in flat.items() if self.is_trainable(k)}
    frozen = {k: v for k, v in flat.items() if not self.is_trainable(k)}
    trainable = {"params": traverse_util.unflatten_dict(train),
                 "lora": self._init_lora(flat, lora_rng)}
    return trainable, traverse_util.unflatten_dict(frozen)

  def _lora_paths(self, flat):
    if self.trainable != "lora":
      return []
    return [k for k in flat if k[0] == "backbone" and k[-1] == "kernel"
            and any(t in k for t in self.lora_targets)]

  def _init_lora(self, flat, rng):
    paths = self._lora_paths(flat)
    if self.trainable == "lora" and not paths:
      raise ValueError(f"config.lrf.lora.targets={self.lora_targets} matches no "
                       "backbone kernel; use module names such as 'query'")
    lora = {}
    for i, path in enumerate(sorted(paths)):
      w = flat[path]
      fan_in = w.shape[0]
      fan_out = int(w.size // fan_in)
      a = jax.random.normal(jax.random.fold_in(rng, i), (fan_in, self.lora_rank),
                            jnp.float32) / jnp.sqrt(fan_in)
      # B = 0: the adapted model starts exactly at the backbone.
      lora[".".join(path)] = {"a": a, "b": jnp.zeros((self.lora_rank, fan_out),
                                                     jnp.float32)}
    return lora

  def merge(self, trainable, frozen):
    """Full Flax variables {"params": ...}, LoRA deltas added."""
    flat = traverse_util.flatten_dict(frozen)
    flat.update(traverse_util.flatten_dict(trainable["params"]))
    scale = self.lora_alpha / self.lora_rank
    for name, ab in trainable["lora"].items():
      path = tuple(name.split("."))
      w = flat[path]
      delta = (ab["a"] @ ab["b"]).reshape(w.shape) * scale
      flat[path] = (w.astype(jnp.float32) + delta).astype(w.dtype)
    return {"params": traverse_util.unflatten_dict(flat)}

  # -- forward -------------------------------------------------------------

  def score(self, variables, tokens, component_ids, mask=None):
    """(B, L) tokens -> (B,) rewards."""
    if mask is None:
      mask = (tokens != self.pad_id).astype(jnp.int32)
    return self.model.apply(variables, tokens, mask, component_ids)

  def lower(self, variables, tokens, mask, stop):
    return self.model.apply(variables, tokens, mask, stop, method=LRFModel.lower)

  def upper(self, variables, hidden, mask, start):
    return self.model.apply(variables, hidden, mask, start, method=LRFModel.upper)

  def head(self, variables, pooled, component_ids):
    return self.model.apply(variables, pooled, component_ids, method=LRFModel.head)

  def rewards(self, variables, feats: dict[str, Any], component_ids):
    """Rewards from whichever input a batch carries: pooled, hidden or tokens."""
    if "pooled" in feats:
      pooled = feats["pooled"]
    elif "hidden" in feats:
      pooled = self.upper(variables, feats["hidden"], feats["mask"],
                          self.frozen_prefix)
    else:
      pooled = self.upper(variables,
                          self.lower(variables, feats["tokens"], feats["mask"], 0),
                          feats["mask"], 0)
    return self.head(variables, pooled, component_ids)

  def features(self, variables, tokens, mask):
    """What the activation cache stores for a frozen prefix."""
    f = self.frozen_prefix
    hidden = self.lower(variables, tokens, mask, f)
    if f == self.num_layers:
      return self.upper(variables, hidden, mask, f)     # pooled (B, H)
    return hidden                                       # (B, L, H)


def _check_same_structure(init_params, loaded):
  """Every initialised path must be loaded with its shape; extra loaded
  params (e.g. a decoder's unused LM head) are ignored by the caller."""
  want = traverse_util.flatten_dict(init_params)
  have = traverse_util.flatten_dict(loaded)
  bad = [(k, v.shape, getattr(have.get(k), "shape", None)) for k, v in want.items()
         if k not in have or have[k].shape != v.shape]
  if bad:
    raise ValueError(f"backbone params from the registry do not match the "
                     f"module's init (path, want, got): {bad[:3]}")
  return traverse_util.unflatten_dict({k: have[k] for k in want})


def build_lrf(backbone, num_components: int, cfg) -> LRF:
  """An LRF from a registry `Backbone` and the `lrf` config block."""
  if backbone.kind == "decoder" and cfg.pooling != "last":
    raise ValueError(f"config.lrf.pooling={cfg.pooling!r} with a decoder "
                     "backbone; use 'last' (causal attention: only the last "
                     "token sees the whole text)")
  if backbone.kind == "encoder" and cfg.pooling == "last":
    raise ValueError("config.lrf.pooling='last' with an encoder; use mean or cls")
  if cfg.trainable == "top" and cfg.top_layers > backbone.num_layers:
    raise ValueError(f"config.lrf.top_layers={cfg.top_layers} > the backbone's "
                     f"{backbone.num_layers} layers; use <= {backbone.num_layers}")
  # Mixed precision (compute_dtype bfloat16 over float32 parameters) is a module
  # setting: the parameters and everything that holds them stay as loaded.
  backbone = with_compute_dtype(backbone, cfg.get("compute_dtype") or cfg.dtype)
  model = LRFModel(backbone=backbone.module, num_components=num_components,
                   num_layers=backbone.num_layers, pooling=cfg.pooling,
                   kind=backbone.kind)
  return LRF(model=model, trainable=cfg.trainable, top_layers=cfg.top_layers,
             lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
             lora_targets=tuple(cfg.lora.targets), pad_id=backbone.pad_id)
