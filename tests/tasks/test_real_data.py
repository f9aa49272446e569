"""The reference's real files (never committed): counts, splits, every row valid.

They live in ../shared/data beside the project root; skipped when absent.
"""

import csv
import json
from pathlib import Path

import pytest

from optimas_jax.tasks import data

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def need(path):
  if not path.exists():
    pytest.skip(f"real task data not found at {path} (not part of the project)")
  return path


def sizes(loaded):
  return tuple(len(loaded.splits[k]) for k in ("train", "val", "test"))


def test_amazon():
  path = need(DATA / "amazon" / data.amazon.FILENAME)
  with open(path, newline="", encoding="utf-8") as f:
    n = sum(1 for _ in csv.DictReader(f))
  assert n == 120
  loaded = data.amazon.load(path)   # raise mode: every row validates
  train_val = int(n * 0.8)
  assert sizes(loaded) == (int(train_val * 0.85), train_val - int(train_val * 0.85), n - train_val)
  assert sizes(loaded) == (81, 15, 24)
  assert loaded.report.rows_read == 120 and loaded.report.rows_skipped == 0
  ex = loaded.splits["train"][0]
  assert ex["sequence"][0].startswith("Oral-B iO9") and len(ex["choices"]) == 4
  assert loaded.splits["test"][0]["id"] == "amazon-96"


def test_pubmedqa():
  folder = need(DATA / "pubmedqa")
  loaded = data.load("pubmedqa", folder)
  assert sizes(loaded) == (int(500 * 0.95), 500 - int(500 * 0.95), 500) == (475, 25, 500)
  assert loaded.report.rows_read == 1000 and loaded.report.rows_skipped == 0
  assert loaded.splits["val"][0]["index"] == "PubMedQA_train_475"


def test_hotpotqa():
  path = need(DATA / "hotpotqa" / data.hotpotqa.FILENAME)
  loaded = data.load("hotpotqa", path)
  assert sizes(loaded) == (0, 0, 100)
  assert loaded.report.rows_read == 100 and loaded.report.rows_skipped == 0
  with open(path, encoding="utf-8") as f:
    first = json.loads(f.readline())
  assert loaded.splits["test"][0] == first   # validated rows pass through unchanged
