"""Amazon next-item selection (KDD Cup 2024 ShopBench), the reference's CSV.

Example: {"id", "question", "sequence": [title, ...], "choices": [4 titles],
"answer": index into choices}. Splits follow the reference: the file 80/20 in
order into train+val / test, then train+val 85/15 in order into train / val.
"""

from __future__ import annotations

import ast
import os

from optimas_jax.tasks.data import common, fields, rows
from optimas_jax.tasks.data.fields import Bad

FILENAME = "session_based_next_item_selection_dataset.csv"
COLUMNS = ("question", "choices", "answer")
MARKER = "Product Sequence:"
NUM_CHOICES = 4
TEST_SPLIT, VAL_SPLIT = 0.8, 0.85


def parse_sequence(question: str) -> list[str]:
  """The clicked titles: one per line after MARKER."""
  if MARKER not in question:
    raise Bad("question", f"text containing {MARKER!r} then one title per line", question)
  titles = [t.strip() for t in question.split(MARKER)[-1].splitlines()]
  titles = [t for t in titles if t]
  if not titles:
    raise Bad("question", f"at least one product title after {MARKER!r}", question)
  return titles


def parse_choices(cell) -> list[str]:
  """A Python-literal list; literal_eval, never eval (the file is untrusted)."""
  expected = f"a Python-literal list of {NUM_CHOICES} strings"
  try:
    value = ast.literal_eval(cell) if isinstance(cell, str) else None
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    raise Bad("choices", expected, cell) from None
  if not isinstance(value, list) or len(value) != NUM_CHOICES:
    raise Bad("choices", expected, cell)
  return fields.text_list(value, "choices", length=NUM_CHOICES, nonempty=True)


def parse_row(row: dict, position: int) -> dict:
  question = fields.text(fields.get(row, "question"), "question")
  sequence = parse_sequence(question)
  choices = parse_choices(fields.get(row, "choices"))
  answer = fields.int_text(fields.get(row, "answer"), "answer", 0, NUM_CHOICES - 1)
  return {"id": f"amazon-{position}", "question": question, "sequence": sequence,
          "choices": choices, "answer": answer}


def load(path: str | os.PathLike | None, on_error: str = "raise") -> common.Loaded:
  """Reads the CSV at `path` (or FILENAME inside the folder `path`).

  on_error="skip" drops malformed rows (counted in the report) and splits
  the rows kept.
  """
  common.check_on_error(on_error)
  file = common.resolve_file(path, "amazon", FILENAME)
  examples, report = rows.validate(file, rows.csv_records(file, COLUMNS), parse_row, on_error)
  train_val, test = common.split_in_order(examples, TEST_SPLIT)
  train, val = common.split_in_order(train_val, VAL_SPLIT)
  return common.Loaded({"train": train, "val": val, "test": test}, report)
