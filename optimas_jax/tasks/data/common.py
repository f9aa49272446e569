"""What every loader shares: errors, the load report, path checks, in-order splits."""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Sequence

ON_ERROR = ("raise", "skip")


class DataFormatError(ValueError):
  """A malformed row: names the file, the 1-based line, the field and what was expected."""

  def __init__(self, file: str, line: int, field: str | None, expected: str, got: str):
    self.file, self.line, self.field = file, line, field
    self.expected, self.got = expected, got
    where = f"{file} line {line}" + (f", field {field!r}" if field else "")
    super().__init__(f"{where}: expected {expected}, got {got}")


class DataPathError(FileNotFoundError):
  """No data path, or one that does not hold the expected files."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """Rows read and skipped; `errors` holds one message per skipped row."""

  files: tuple[str, ...]
  rows_read: int
  errors: tuple[DataFormatError, ...] = ()

  @property
  def rows_skipped(self) -> int:
    return len(self.errors)

  @property
  def rows_kept(self) -> int:
    return self.rows_read - self.rows_skipped

  @property
  def reasons(self) -> dict[str, int]:
    """Skipped rows per field ("row" when the row itself would not parse)."""
    return dict(collections.Counter(e.field or "row" for e in self.errors))

  def merge(self, other: LoadReport) -> LoadReport:
    return LoadReport(self.files + other.files, self.rows_read + other.rows_read,
                      self.errors + other.errors)

  def __str__(self) -> str:
    why = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
    return (f"read {self.rows_read} rows, skipped {self.rows_skipped}"
            + (f" ({why})" if why else ""))


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A loader's answer: {"train", "val", "test"} -> example dicts, and the report."""

  splits: dict[str, list[dict]]
  report: LoadReport


def check_on_error(on_error: str) -> None:
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error={on_error!r}: choose one of {ON_ERROR}")


def split_in_order(rows: Sequence, fraction: float) -> tuple[list, list]:
  """Head/tail cut at int(len * fraction), the reference's rule (no shuffle)."""
  cut = int(len(rows) * fraction)
  return list(rows[:cut]), list(rows[cut:])


def _no_path(task: str, want: str) -> DataPathError:
  return DataPathError(
      f"{task}: no data path given. Pass --config.data.path=<{want}> "
      "(the loaders read local files only; offline machines cannot download).")


def resolve_file(path: str | os.PathLike | None, task: str, filename: str) -> Path:
  """The data file at `path`, or `filename` inside `path` when it is a folder."""
  want = f"path to {filename}"
  if path is None or str(path) == "":
    raise _no_path(task, want)
  p = Path(path)
  if p.is_dir():
    p = p / filename
  if not p.is_file():
    raise DataPathError(f"{task}: config.data.path={str(path)!r} does not exist or is "
                        f"not a file; expected the file {filename} (or a folder holding it)")
  return p


def resolve_folder(path: str | os.PathLike | None, task: str,
                   filenames: Sequence[str]) -> dict[str, Path]:
  """filename -> path inside the folder `path`, which must hold every one of them."""
  names = " and ".join(filenames)
  if path is None or str(path) == "":
    raise _no_path(task, f"folder holding {names}")
  p = Path(path)
  if not p.is_dir():
    raise DataPathError(f"{task}: config.data.path={str(path)!r} is not a folder; "
                        f"expected a folder holding {names}")
  missing = [n for n in filenames if not (p / n).is_file()]
  if missing:
    raise DataPathError(f"{task}: config.data.path={str(path)!r} lacks "
                        f"{', '.join(missing)}; expected a folder holding {names}")
  return {n: p / n for n in filenames}
