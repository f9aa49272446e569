"""Reading rows with their line numbers, and the raise-or-skip loop over them."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from optimas_jax.tasks.data.common import DataFormatError, LoadReport, check_on_error
from optimas_jax.tasks.data.fields import Bad

Record = tuple[int, Any]   # (1-based line where the row starts, dict or Bad)


def jsonl_records(path: Path) -> Iterator[Record]:
  """One JSON object per non-blank line (a ".gz" file is read through gzip)."""
  opened = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
  with opened as f:   # bytes, so a bad encoding is one bad row, not a crash
    for line, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        obj = json.loads(raw.decode("utf-8"))
      except UnicodeDecodeError as e:
        yield line, Bad(None, "UTF-8 text", None, shown=f"undecodable byte at column {e.start + 1}")
        continue
      except json.JSONDecodeError as e:
        yield line, Bad(None, "a JSON object", None,
                        shown=f"invalid JSON ({e.msg} at column {e.colno})")
        continue
      if not isinstance(obj, dict):
        obj = Bad(None, "a JSON object", None, shown=f"a JSON {type(obj).__name__}")
      yield line, obj


def csv_records(path: Path, columns: Sequence[str]) -> Iterator[Record]:
  """Rows as {header: cell}; a record may span lines (quoted newlines), so the
  line reported is the one where it starts. A bad header or encoding stops the
  read: no row after it can be trusted."""
  with path.open(encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f)
    header, end = None, 0
    while True:
      start = end + 1
      try:
        row = next(reader)
      except StopIteration:
        break
      except (csv.Error, UnicodeDecodeError) as e:
        raise DataFormatError(path.name, start, None, "readable CSV text",
                              f"{type(e).__name__}: {e}") from None
      end = reader.line_num
      if not row:                      # a blank line
        continue
      if header is None:
        header = row
        absent = [c for c in columns if c not in header]
        if absent:
          raise DataFormatError(path.name, start, absent[0],
                                "a header with columns " + ", ".join(columns),
                                repr(",".join(header))[:60])
        continue
      if len(row) != len(header):
        yield start, Bad(None, f"{len(header)} columns", None, shown=f"{len(row)} columns")
        continue
      yield start, dict(zip(header, row))
    if header is None:
      raise DataFormatError(path.name, 1, None, "a header with columns " + ", ".join(columns),
                            "an empty file")


def validate(path: Path, records: Iterator[Record], parse: Callable[[dict, int], dict],
             on_error: str) -> tuple[list[dict], LoadReport]:
  """parse(row, position) each record; position counts rows in file order, bad ones too."""
  check_on_error(on_error)
  examples, errors, read = [], [], 0
  for line, record in records:
    read += 1
    try:
      if isinstance(record, Bad):
        raise record
      examples.append(parse(record, read - 1))
    except Bad as bad:
      err = DataFormatError(path.name, line, bad.field, bad.expected, bad.got)
      if on_error == "raise":
        raise err from None
      errors.append(err)
  return examples, LoadReport((str(path),), read, tuple(errors))
