"""A GGUF checkpoint converted once per machine, then loaded as plain arrays.

Reading SmolLM2's GGUF file costs ~4 s per process: `gguf.GGUFReader` parses the
tokenizer's 49,152 tokens and 48,900 merges field by field, and every tensor is
dequantized from Q4_1. The converted model (weights in the target dtype as
safetensors, the tokenizer as `tokenizer.json`, config and token ids as JSON) is
kept in `$OPTIMAS_JAX_MODEL_CACHE` (default `~/.cache/optimas_jax/models`; set it
empty to convert every time) and loads in ~0.3 s.

The folder's key holds what the conversion reads: the GGUF file's path, size and
modification time, the dtype, the gguf/tokenizers versions and the source of the
converting modules, so an edited converter converts again. A folder appears whole
or not at all (written beside, then renamed); an unreadable one is converted again.
Every checkout, environment or converter change keys a new folder, so only the
`KEEP_PER_MODEL` most recently used conversions of a file name and dtype are kept
(`core/disk_cache.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import tokenizers
from absl import logging
from flax import traverse_util

from optimas_jax.core import disk_cache
from optimas_jax.models import llama, tokenizer as tok_lib

_CONVERTERS = ("converted.py", "gguf_io.py", "weights.py", "tokenizer.py", "llama.py")
_TOKENIZER_FIELDS = ("pad_id", "eos_ids", "bos_id", "add_bos", "chat_template", "max_id")
# Conversions kept per GGUF file name and dtype (540 MB each for SmolLM2 in float32).
KEEP_PER_MODEL = 2

Converted = tuple  # (LlamaConfig, params, TextTokenizer)


def folder() -> pathlib.Path | None:
  """Where converted models are kept (None: not kept)."""
  path = os.environ.get("OPTIMAS_JAX_MODEL_CACHE",
                        os.path.expanduser("~/.cache/optimas_jax/models"))
  return pathlib.Path(path) if path else None


def _target(path: pathlib.Path, dtype) -> pathlib.Path | None:
  root = folder()
  if root is None:
    return None
  return root / f"{path.stem}-{jnp.dtype(dtype).name}-{_key(path, dtype)}"


def load_or_convert(path: pathlib.Path, dtype, convert: Callable[[], Converted]) -> Converted:
  """The converted model of the file at `path`: kept, or `convert()`ed and kept."""
  target = _target(path, dtype)
  if target is None:
    return convert()
  if target.is_dir():
    try:
      out = _read(target, dtype)
      disk_cache.touch(target)
      return out
    except Exception as e:  # pylint: disable=broad-except
      # A foreign or damaged folder: convert again and replace it.
      logging.warning("converted model %s unreadable (%s: %s); converting again", target,
                      type(e).__name__, e)
      shutil.rmtree(target, ignore_errors=True)
  out = convert()
  try:
    _write(target, *out)
  except OSError as e:            # a read-only or full disk: the model still loads
    logging.warning("converted model not kept in %s (%s)", target.parent, e)
    return out
  same = target.parent.glob(f"{path.stem}-{jnp.dtype(dtype).name}-*")
  disk_cache.evict([p for p in same if p.is_dir()], max_entries=KEEP_PER_MODEL, keep=target)
  return out


def kept_tokenizer(path: pathlib.Path) -> tok_lib.TextTokenizer | None:
  """The tokenizer of the file's float32 conversion, if one is kept (else None)."""
  target = _target(path, jnp.float32)
  if target is None or not target.is_dir():
    return None
  try:
    return _read_tokenizer(target)
  except Exception:  # pylint: disable=broad-except  (damaged: the caller reads the file)
    return None


def _key(path: pathlib.Path, dtype) -> str:
  h = hashlib.blake2b(digest_size=8)
  stat = path.stat()
  parts = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, jnp.dtype(dtype).name]
  for name in ("gguf", "tokenizers", "safetensors"):
    try:
      parts.append(importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
      parts.append("none")
  here = pathlib.Path(__file__).parent
  parts += [(here / name).read_bytes() for name in _CONVERTERS]
  for part in parts:
    h.update(part if isinstance(part, bytes) else str(part).encode())
    h.update(b"\0")
  return h.hexdigest()


def _write(target: pathlib.Path, config: llama.LlamaConfig, params, tokenizer) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
  try:
    flat = traverse_util.flatten_dict(params, sep="/")
    safetensors.numpy.save_file({k: np.asarray(v) for k, v in flat.items()},
                                str(tmp / "params.safetensors"))
    tokenizer.tokenizer.save(str(tmp / "tokenizer.json"))
    config_fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                     if f.name != "dtype"}
    meta = dict(config=config_fields,
                tokenizer={f: getattr(tokenizer, f) for f in _TOKENIZER_FIELDS})
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
      tmp.rename(target)
    except OSError:
      if not target.is_dir():    # not another process's identical folder: a real error
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _read_tokenizer(target: pathlib.Path) -> tok_lib.TextTokenizer:
  fields = dict(json.loads((target / "meta.json").read_text())["tokenizer"])
  fields["eos_ids"] = tuple(fields["eos_ids"])
  return tok_lib.TextTokenizer(
      tokenizers.Tokenizer.from_file(str(target / "tokenizer.json")), **fields)


def _read(target: pathlib.Path, dtype) -> Converted:
  meta = json.loads((target / "meta.json").read_text())
  config = llama.LlamaConfig(**meta["config"], dtype=jnp.dtype(dtype))
  tokenizer = _read_tokenizer(target)
  flat = safetensors.numpy.load_file(str(target / "params.safetensors"))
  params = traverse_util.unflatten_dict(jax.device_put(flat), sep="/")
  return config, params, tokenizer
