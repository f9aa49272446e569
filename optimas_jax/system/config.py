"""SystemConfig: every component's variable value, as one immutable object.

Saved as `config.json` (prompts, hyperparameters, model choices) plus one
`<component>.npz` per model-parameters variable; writes are atomic (a temp
folder renamed into place), so a crash never leaves half a configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from optimas_jax import atomic
from optimas_jax.core.keys import canonical_json
from optimas_jax.system.variables import ModelParameters


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if "/" in str(key):
      raise ValueError(f"parameter key {key!r} contains '/', which is the path separator")
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def _unflatten(flat: Mapping[str, Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _array_bytes(a) -> tuple[str, bytes]:
  a = np.asarray(a)
  return str(a.dtype), np.ascontiguousarray(a).tobytes()


class SystemConfig(Mapping):
  """An immutable mapping component name -> variable value."""

  def __init__(self, values: Mapping[str, Any], specs: Mapping[str, Any]):
    unknown = set(values) - set(specs)
    if unknown:
      raise KeyError(f"SystemConfig: no optimizable component named {sorted(unknown)}; "
                     f"known: {sorted(specs)}")
    missing = set(specs) - set(values)
    if missing:
      raise KeyError(f"SystemConfig: missing values for {sorted(missing)}")
    self._specs = dict(specs)
    self._values = {name: specs[name].validate(values[name], f"config[{name!r}]")
                    for name in specs}

  @classmethod
  def defaults(cls, specs: Mapping[str, Any]) -> "SystemConfig":
    return cls({name: spec.default for name, spec in specs.items()}, specs)

  def __getitem__(self, name):
    return self._values[name]

  def __iter__(self):
    return iter(self._values)

  def __len__(self):
    return len(self._values)

  def __repr__(self):
    shown = {k: ("<params>" if isinstance(self._specs[k], ModelParameters) else v)
             for k, v in self._values.items()}
    return f"SystemConfig({shown})"

  def override(self, **values) -> "SystemConfig":
    """A new configuration with some variables replaced; `self` is unchanged."""
    return SystemConfig({**self._values, **values}, self._specs)

  def json_values(self) -> dict:
    """Every variable except model parameters (those travel as arrays)."""
    return {k: v for k, v in self._values.items()
            if not isinstance(self._specs[k], ModelParameters)}

  def variable_hash(self, name: str) -> str:
    """A stable content hash of one variable's value (cache keys)."""
    h = hashlib.blake2b(digest_size=12)
    if isinstance(self._specs[name], ModelParameters):
      for path, leaf in sorted(_flatten(self._values[name]).items()):
        dtype, raw = _array_bytes(leaf)
        h.update(f"{path}|{dtype}|{np.shape(leaf)}|".encode())
        h.update(raw)
    else:
      h.update(canonical_json(self._values[name]).encode())
    return h.hexdigest()

  # ------------------------------------------------------------ persistence

  def to_json_dict(self) -> dict:
    out = {}
    for name, value in self._values.items():
      spec = self._specs[name]
      if isinstance(spec, ModelParameters):
        out[name] = {"kind": spec.kind, "arrays": f"{name}.npz"}
      else:
        out[name] = {"kind": spec.kind, "value": value}
    return out

  def save(self, directory: str | os.PathLike) -> pathlib.Path:
    """Writes config.json (+ arrays) to `directory` atomically."""
    directory = pathlib.Path(directory)
    with atomic.replaced_directory(directory) as tmp:
      (tmp / "config.json").write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True))
      for name, spec in self._specs.items():
        if isinstance(spec, ModelParameters):
          flat = _flatten(self._values[name])
          dtypes = {k: str(np.asarray(v).dtype) for k, v in flat.items()}
          # bfloat16 and friends are stored as raw bytes + their dtype name.
          arrays = {k: np.asarray(v).view(f"u{np.asarray(v).dtype.itemsize}")
                    if np.asarray(v).dtype.kind == "V" or "bfloat" in str(np.asarray(v).dtype)
                    else np.asarray(v) for k, v in flat.items()}
          np.savez(tmp / f"{name}.npz", __dtypes__=json.dumps(dtypes), **arrays)
    return directory

  @classmethod
  def load(cls, directory: str | os.PathLike, specs: Mapping[str, Any]) -> "SystemConfig":
    directory = pathlib.Path(directory)
    path = directory / "config.json"
    if not path.exists():
      raise FileNotFoundError(f"no system configuration at {path}")
    stored = json.loads(path.read_text())
    values = {}
    for name, entry in stored.items():
      if name not in specs:
        raise KeyError(f"{path}: component {name!r} is not in this system; known: {sorted(specs)}")
      if entry["kind"] != specs[name].kind:
        raise ValueError(f"{path}: {name!r} was saved as {entry['kind']}, "
                         f"the system declares {specs[name].kind}")
      if entry["kind"] == "model_parameters":
        with np.load(directory / entry["arrays"]) as data:
          dtypes = json.loads(str(data["__dtypes__"]))
          flat = {}
          for key, dtype in dtypes.items():
            arr = data[key]
            flat[key] = arr.view(_np_dtype(dtype)) if str(arr.dtype) != dtype else arr
        values[name] = _unflatten(flat)
      else:
        values[name] = entry["value"]
    return cls(values, specs)


def _np_dtype(name: str):
  if "bfloat16" in name or "float8" in name:
    import ml_dtypes  # a JAX dependency, always installed alongside it
    return getattr(ml_dtypes, name)
  return np.dtype(name)
