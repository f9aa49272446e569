"""LoRA adapters for the Flax Llama decoder, as plain array pytrees.

An adapter is a nested dict of arrays, so it is a ``ModelParameters`` value
of a ``SystemConfig`` (saved to npz) and a leaf-only pytree for jit/orbax:

  {"base_digest": uint8[32]  sha256 of the base weights it was trained on,
   "scaling":     float32 ()  alpha / rank,
   "layers": {"layer_0": {"q_proj": {"a": (in, r), "b": (r, out)}, ...}, ...}}

``b`` starts at zero, so a fresh adapter is the identity. Two ways to run
base + adapter, with the same result up to float rounding:

- merged (``merge``): W + scaling * A @ B on each targeted kernel, then the
  plain decoder. Only the targeted kernels are new arrays; the rest of the
  tree is the base's own leaves.
- unmerged (``unmerged`` / ``adapted_apply(mode="unmerged")``): a flax
  method interceptor adds scaling * (x @ A) @ B to each targeted Dense's
  output; the base kernels are used as they are.

Which is faster where was measured on SmolLM2-135M, rank 8 on q/v, 2-core
CPU (experiments/benchmarks/rl_step.py --measure_lora, interleaved runs;
docs/benchmarks/rl_step.json), and ``SAMPLING_MODE`` / ``TRAINING_MODE``
follow from it:

- sampling 8 x 32 tokens: merged 18.6 s vs unmerged 18.4 s (and 22.2 vs
  27.8 s in a second run). Merged is the plain decode program (no extra
  per-token work, the base's compiled program is reused) after a 0.03-0.09
  s merge, cached per adapter; unmerged adds two rank-r matmuls per
  targeted projection per decode step.
- one update (forward/backward over 8 x 64 tokens): unmerged 16.3 s vs
  merged 17.3 s (21.8 vs 25.0 s in the second run). Merged forms the
  full-size kernel gradient x^T dy of every targeted kernel before
  projecting it onto A and B; unmerged only ever sees rank-r cotangents.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import pathlib
import threading
from typing import Any, Literal, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from optimas_jax import atomic

Mode = Literal["merged", "unmerged"]
# Sampling a float32 base: merge once per adapter (cached by the caller), then
# decode with the plain kernels: no per-token adapter matmuls.
SAMPLING_MODE: Mode = "merged"
# Training: the unmerged form never forms a full-size kernel gradient
# (dW = x^T dy), only x @ A and its rank-r cotangents.
TRAINING_MODE: Mode = "unmerged"

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Rank, scale and targeted projections of a LoRA adapter."""

  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ("q_proj", "v_proj")
  dropout: float = 0.0

  def __post_init__(self):
    if isinstance(self.targets, str):
      raise ValueError(f"LoraConfig.targets={self.targets!r}: give a tuple of module names, "
                       f"e.g. ({self.targets!r},)")
    object.__setattr__(self, "targets", tuple(self.targets))

  @property
  def scaling(self) -> float:
    return float(self.alpha) / float(self.rank)

  def validate(self, base_params) -> None:
    """Raises ValueError naming the bad field and its fix."""
    if not isinstance(self.rank, (int, np.integer)) or self.rank < 1:
      raise ValueError(f"LoraConfig.rank={self.rank!r}: must be an int >= 1 (8 is usual)")
    if not np.isfinite(self.alpha) or self.alpha <= 0:
      raise ValueError(f"LoraConfig.alpha={self.alpha!r}: must be a positive float "
                       "(scaling = alpha / rank; 2 * rank is usual)")
    if self.dropout != 0:
      raise ValueError(f"LoraConfig.dropout={self.dropout}: LoRA dropout is not implemented; "
                       "use 0.0")
    if not self.targets:
      raise ValueError("LoraConfig.targets is empty; name projections such as "
                       "('q_proj', 'v_proj')")
    kernels = _layer_kernels(base_params)
    valid = sorted({name for _, name in kernels})
    unknown = [t for t in self.targets if t not in valid]
    if unknown:
      raise ValueError(f"LoraConfig.targets={self.targets}: {unknown} match no kernel of the "
                       f"base model; valid names: {valid}")
    for (layer, name), w in kernels.items():
      if name in self.targets and self.rank > min(w.shape):
        raise ValueError(f"LoraConfig.rank={self.rank} is wider than {layer}/{name}'s kernel "
                         f"{tuple(w.shape)}; use rank <= {min(w.shape)}")


def _unwrap(params) -> Mapping:
  """The inner params dict: accepts Flax variables {"params": ...} or the dict itself."""
  if isinstance(params, Mapping) and set(params) == {"params"}:
    return params["params"]
  return params


def _layer_kernels(base_params) -> dict[tuple[str, str], Any]:
  """{(layer_i, module): kernel} for every 2-D Dense kernel inside a ``layer_*``."""
  inner = _unwrap(base_params)
  if not isinstance(inner, Mapping):
    raise ValueError(f"base params must be a nested dict (a Flax params pytree), "
                     f"got {type(inner).__name__}")
  out = {}
  for layer, modules in inner.items():
    if not str(layer).startswith("layer_") or not isinstance(modules, Mapping):
      continue
    for name, leaves in modules.items():
      if isinstance(leaves, Mapping) and np.ndim(leaves.get("kernel")) == 2:
        out[(layer, name)] = leaves["kernel"]
  return out


# ---------------------------------------------------------------- digests

_DIGESTS: collections.OrderedDict = collections.OrderedDict()
_DIGEST_LOCK = threading.Lock()


def base_digest(base_params) -> str:
  """Hex sha256 over every leaf's path, dtype, shape and bytes.

  Memoized by object identity (the memo holds the object, so its id is not
  reused while cached): repeated calls on the same tree are free. Trees are
  treated as immutable values, as everywhere in JAX.
  """
  key = id(base_params)
  with _DIGEST_LOCK:
    hit = _DIGESTS.get(key)
    if hit is not None and hit[0] is base_params:
      _DIGESTS.move_to_end(key)
      return hit[1]
  h = hashlib.sha256()
  leaves, _ = jax.tree_util.tree_flatten_with_path(_unwrap(base_params))
  for path, leaf in leaves:
    arr = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  digest = h.hexdigest()
  with _DIGEST_LOCK:
    _DIGESTS[key] = (base_params, digest)
    while len(_DIGESTS) > 4:
      _DIGESTS.popitem(last=False)
  return digest


def _digest_array(hex_digest: str) -> np.ndarray:
  return np.frombuffer(bytes.fromhex(hex_digest), np.uint8).copy()


def adapter_digest(adapter) -> str:
  """The hex digest of the base model ``adapter`` was made for."""
  if not isinstance(adapter, Mapping) or "base_digest" not in adapter:
    raise ValueError("not a LoRA adapter: expected a dict with 'base_digest', 'scaling' and "
                     "'layers' (from models.lora.init_adapter)")
  raw = np.asarray(adapter["base_digest"])
  if raw.dtype != np.uint8 or raw.shape != (32,):
    raise ValueError(f"adapter['base_digest'] has dtype {raw.dtype} shape {raw.shape}; "
                     "expected uint8[32] (a sha256)")
  return raw.tobytes().hex()


def check_compatible(adapter, base_params, where: str = "adapter") -> None:
  """Raises ValueError naming both digests when ``adapter`` is for another base."""
  have, want = adapter_digest(adapter), base_digest(base_params)
  if have != want:
    raise ValueError(f"{where} was trained on base weights {have[:16]}..., but these base "
                     f"weights are {want[:16]}...; load the base model it was made for "
                     "(or init a new adapter)")
  kernels = _layer_kernels(base_params)
  for layer, modules in adapter["layers"].items():
    for name, ab in modules.items():
      w = kernels.get((layer, name))
      if w is None or np.shape(ab["a"])[0] != w.shape[0] or np.shape(ab["b"])[1] != w.shape[1]:
        raise ValueError(f"{where}: {layer}/{name} factors {np.shape(ab['a'])} @ "
                         f"{np.shape(ab['b'])} do not fit the base kernel "
                         f"{None if w is None else tuple(w.shape)}")


# ---------------------------------------------------------------- init, merge


def init_adapter(config: LoraConfig, base_params, seed: int) -> dict:
  """A fresh adapter: A ~ N(0, 1/in), B = 0 (the identity), float32."""
  config.validate(base_params)
  key = jax.random.key(seed)
  layers: dict = {}
  kernels = _layer_kernels(base_params)
  targets = sorted(k for k in kernels if k[1] in config.targets)
  for i, (layer, name) in enumerate(targets):
    fan_in, fan_out = kernels[(layer, name)].shape
    a = jax.random.normal(jax.random.fold_in(key, i), (fan_in, config.rank), jnp.float32)
    layers.setdefault(layer, {})[name] = {
        "a": a / np.float32(np.sqrt(fan_in)),
        "b": jnp.zeros((config.rank, fan_out), jnp.float32)}
  return {"base_digest": _digest_array(base_digest(base_params)),
          "scaling": np.asarray(config.scaling, np.float32),
          "layers": layers}


# Jitted: called eagerly it is one fused op per kernel; under an outer jit it inlines.
@jax.jit
def _merged_kernel(w, a, b, scaling):
  delta = (a.astype(jnp.float32) @ b.astype(jnp.float32)) * scaling
  return (w.astype(jnp.float32) + delta).astype(w.dtype)


def merge(base_params, adapter) -> dict:
  """Base variables with W + scaling * A @ B on every targeted kernel.

  Pure and jittable. Called eagerly, only the targeted kernels are new
  arrays (one small jitted op each); every other leaf is the base's own.
  """
  wrapped = isinstance(base_params, Mapping) and set(base_params) == {"params"}
  inner = dict(_unwrap(base_params))
  for layer, modules in adapter["layers"].items():
    new_layer = dict(inner[layer])
    for name, ab in modules.items():
      kernel = _merged_kernel(new_layer[name]["kernel"], ab["a"], ab["b"], adapter["scaling"])
      new_layer[name] = {**new_layer[name], "kernel": kernel}
    inner[layer] = new_layer
  return {"params": inner} if wrapped else inner


@contextlib.contextmanager
def unmerged(adapter):
  """Within the block, ``module.apply`` adds scaling * (x @ A) @ B to the
  outputs of the targeted Dense layers (paths ``(layer_i, name)``)."""
  layers, scaling = adapter["layers"], adapter["scaling"]

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name != "__call__" or not isinstance(context.module, nn.Dense):
      return out
    path = context.module.path
    ab = layers.get(path[-2], {}).get(path[-1]) if len(path) >= 2 else None
    if ab is None:
      return out
    x = args[0].astype(jnp.float32)
    delta = ((x @ ab["a"]) @ ab["b"]) * scaling
    # One rounding to the activation dtype, of the sum: adding a bfloat16-rounded
    # delta would round a small one twice.
    return (out.astype(jnp.float32) + delta).astype(out.dtype)

  with nn.intercept_methods(interceptor):
    yield


def adapted_apply(module, base_params, adapter, *args, mode: Mode = TRAINING_MODE,
                  method=None, **kwargs):
  """``module.apply`` with base + adapter (``adapter`` None: the base alone)."""
  if adapter is None:
    return module.apply(base_params, *args, method=method, **kwargs)
  if mode == "merged":
    return module.apply(merge(base_params, adapter), *args, method=method, **kwargs)
  if mode != "unmerged":
    raise ValueError(f"mode={mode!r}: use 'merged' or 'unmerged'")
  with unmerged(adapter):
    return module.apply(base_params, *args, method=method, **kwargs)


# ---------------------------------------------------------------- files


def sampling_mode(base_dtype) -> Mode:
  """How to sample, score and serve base + adapter so that it is the adapter training sees.

  Float32: merged (W + s A B in float32 is the trained function up to float32
  rounding). Lower precision: unmerged, as training runs it. A merged kernel
  in bfloat16 rounds a young adapter's delta away (|s A B| far below W's
  spacing of 2^-8 relative), and a float32 merged kernel would still be cast to
  bfloat16 by the Dense layers, so sampling would draw from a different policy
  than the one whose log-probs the update uses.
  """
  return "merged" if jnp.dtype(base_dtype) == jnp.float32 else "unmerged"


def base_dtype(base_params):
  """The dtype of the base's kernels (what `sampling_mode` decides on)."""
  return next(iter(_layer_kernels(base_params).values())).dtype


def _flat_factors(adapter) -> dict[str, np.ndarray]:
  return {f"{layer}/{name}/{part}": np.ascontiguousarray(np.asarray(ab[part], np.float32))
          for layer, modules in adapter["layers"].items()
          for name, ab in modules.items() for part in ("a", "b")}


def save_adapter(path, adapter, config: LoraConfig) -> pathlib.Path:
  """Writes ``path/adapter.safetensors`` + ``path/adapter_config.json`` atomically."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  digest = adapter_digest(adapter)
  scaling = float(np.asarray(adapter["scaling"]))
  if not np.isclose(scaling, config.scaling):
    raise ValueError(f"adapter scaling {scaling} != config alpha/rank {config.scaling}; "
                     "save it with the LoraConfig it was made with")
  meta = {"rank": int(config.rank), "alpha": float(config.alpha),
          "targets": list(config.targets), "dropout": float(config.dropout),
          "base_digest": digest, "format": "optimas_jax.lora/1"}
  with atomic.replaced_directory(path) as tmp:
    save_file(_flat_factors(adapter), str(tmp / ADAPTER_FILE), metadata={"base_digest": digest})
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
  return path


def load_adapter(path) -> tuple[dict, LoraConfig]:
  """(adapter, config) from a folder written by ``save_adapter``."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if not (path / CONFIG_FILE).exists() or not (path / ADAPTER_FILE).exists():
    raise FileNotFoundError(f"{path}: expected {ADAPTER_FILE} and {CONFIG_FILE} "
                            "(written by models.lora.save_adapter)")
  meta = json.loads((path / CONFIG_FILE).read_text())
  config = LoraConfig(rank=int(meta["rank"]), alpha=float(meta["alpha"]),
                      targets=tuple(meta["targets"]), dropout=float(meta.get("dropout", 0.0)))
  layers: dict = {}
  for key, value in load_file(str(path / ADAPTER_FILE)).items():
    layer, name, part = key.split("/")
    layers.setdefault(layer, {}).setdefault(name, {})[part] = value
  for layer, modules in layers.items():
    for name, ab in modules.items():
      if set(ab) != {"a", "b"} or ab["a"].shape[1] != config.rank or \
          ab["b"].shape[0] != config.rank:
        raise ValueError(f"{path}: {layer}/{name} factors {[v.shape for v in ab.values()]} "
                         f"do not match rank {config.rank} in {CONFIG_FILE}")
  adapter = {"base_digest": _digest_array(meta["base_digest"]),
             "scaling": np.asarray(config.scaling, np.float32), "layers": layers}
  return adapter, config
