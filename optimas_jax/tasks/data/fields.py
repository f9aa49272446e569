"""Field checks shared by the loaders: each returns the clean value or raises `Bad`."""

from __future__ import annotations

from typing import Any, Sequence

MISSING = object()   # a field absent from the row (None is a value in JSON)


def show(value: Any) -> str:
  """How a bad value is quoted in an error: short, so one message fits a line."""
  if value is MISSING:
    return "nothing (field missing)"
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


class Bad(Exception):
  """A row failed a check; the loader adds the file and line."""

  def __init__(self, field: str | None, expected: str, got: Any, shown: str | None = None):
    self.field, self.expected = field, expected
    self.got = show(got) if shown is None else shown
    super().__init__(f"field {field!r}: expected {expected}, got {self.got}")


def get(row: dict, field: str) -> Any:
  return row.get(field, MISSING)


def text(value: Any, field: str, *, nonempty: bool = True) -> str:
  if not isinstance(value, str) or (nonempty and not value.strip()):
    raise Bad(field, "a non-empty string" if nonempty else "a string", value)
  return value


def text_list(value: Any, field: str, *, length: int | None = None,
              nonempty: bool = False) -> list[str]:
  """A list of strings; `length` fixes its size, `nonempty` forbids blank items."""
  size = f"{length} " if length is not None else ""
  kind = "non-empty strings" if nonempty else "strings"
  expected = f"a list of {size}{kind}"
  if not isinstance(value, list) or (length is not None and len(value) != length):
    raise Bad(field, expected, value)
  for i, item in enumerate(value):
    if not isinstance(item, str) or (nonempty and not item.strip()):
      raise Bad(f"{field}[{i}]", "a non-empty string" if nonempty else "a string", item)
  return list(value)


def int_list(value: Any, field: str, *, length: int) -> list[int]:
  if not isinstance(value, list) or len(value) != length:
    raise Bad(field, f"a list of {length} integers", value)
  for i, item in enumerate(value):
    # bool is an int subclass; True is never a sentence index.
    if not isinstance(item, int) or isinstance(item, bool) or item < 0:
      raise Bad(f"{field}[{i}]", "a non-negative integer", item)
  return list(value)


def int_text(value: Any, field: str, lo: int, hi: int) -> int:
  """A CSV cell holding a decimal integer in [lo, hi] ("2", not "2.0")."""
  cell = value.strip() if isinstance(value, str) else None
  if cell is None or not (cell.isascii() and cell.isdigit()) or not lo <= int(cell) <= hi:
    raise Bad(field, f"an integer {lo}-{hi}", value)
  return int(cell)


def one_of(value: Any, field: str, options: Sequence[str]) -> str:
  if value not in options:
    raise Bad(field, "one of " + ", ".join(options), value)
  return value


def mapping(value: Any, field: str, keys: Sequence[str]) -> dict:
  if not isinstance(value, dict):
    raise Bad(field, "an object with keys " + ", ".join(keys), value)
  return value
