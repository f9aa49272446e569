"""Loaders for the reference's task data (Amazon, PubMedQA, HotpotQA).

Each `load(path, on_error="raise")` returns `Loaded(splits, report)`: splits
maps "train" / "val" / "test" to lists of plain dict examples (each with an
"id"), cut in file order as the reference does. Malformed rows raise
`DataFormatError` (file, line, field, expectation) or, with on_error="skip",
are dropped and counted in `report`. Paths are local only: nothing downloads.
"""

from __future__ import annotations

import os

from optimas_jax.core.registry import lookup
from optimas_jax.tasks.data import amazon, hotpotqa, pubmedqa
from optimas_jax.tasks.data.common import DataFormatError, DataPathError, Loaded, LoadReport

LOADERS = {"amazon": amazon.load, "pubmedqa": pubmedqa.load, "hotpotqa": hotpotqa.load}

__all__ = ["DataFormatError", "DataPathError", "LOADERS", "Loaded", "LoadReport", "load"]


def load(name: str, path: str | os.PathLike | None, on_error: str = "raise") -> Loaded:
  """The loader for task `name` (`config.data.name`) on `config.data.path`."""
  return lookup(LOADERS, name, "data name")(path, on_error=on_error)
