"""PubMedQA expert-labelled questions, the reference's two JSON-lines files.

Example: {"id" (= index), "index", "key" (PMID), "question", "context":
[str, ...], "groundtruth": yes/no/maybe}. Splits follow the reference: the
train file 95/5 in order into train / val; the test file is test.
"""

from __future__ import annotations

import os

from optimas_jax.tasks.data import common, fields, rows

TRAIN_FILE = "combined_PubMedQA_train.jsonl"
TEST_FILE = "combined_PubMedQA_test.jsonl"
LABELS = ("yes", "no", "maybe")
VAL_SPLIT = 0.95


def parse_row(row: dict, position: int) -> dict:
  del position   # rows carry their own index
  index = fields.text(fields.get(row, "index"), "index")
  return {
      "id": index,
      "index": index,
      "key": fields.text(fields.get(row, "key"), "key"),
      "question": fields.text(fields.get(row, "question"), "question"),
      "context": fields.text_list(fields.get(row, "context"), "context"),
      "groundtruth": fields.one_of(fields.get(row, "groundtruth"), "groundtruth", LABELS),
  }


def load(path: str | os.PathLike | None, on_error: str = "raise") -> common.Loaded:
  """Reads TRAIN_FILE and TEST_FILE from the folder `path`.

  on_error="skip" drops malformed rows (counted in the report) and splits
  the rows kept.
  """
  common.check_on_error(on_error)
  files = common.resolve_folder(path, "pubmedqa", (TRAIN_FILE, TEST_FILE))
  loaded = {name: rows.validate(f, rows.jsonl_records(f), parse_row, on_error)
            for name, f in files.items()}
  (train_val, train_report), (test, test_report) = loaded[TRAIN_FILE], loaded[TEST_FILE]
  train, val = common.split_in_order(train_val, VAL_SPLIT)
  return common.Loaded({"train": train, "val": val, "test": test},
                       train_report.merge(test_report))
