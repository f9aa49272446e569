"""Amazon CSV loader on small files written here: parsing, errors, splits, paths."""

import csv

import pytest

from optimas_jax.tasks.data import DataFormatError, DataPathError, amazon

# Each question spans 4 lines, so row k (0-based) starts on line 2 + 4k.
QUESTION = "Pick the next item.\nProduct Sequence: \nMug\nKettle"
CHOICES = "['Tea', 'Spoon', \"Ella's Cup\", 'Lid']"


def write(path, rows, header=amazon.COLUMNS):
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def good_rows(n):
  return [(QUESTION, CHOICES, str(i % 4)) for i in range(n)]


def test_parses_rows(tmp_path):
  loaded = amazon.load(write(tmp_path / "a.csv", good_rows(10)))
  first = loaded.splits["train"][0]
  assert first == {"id": "amazon-0", "question": QUESTION, "sequence": ["Mug", "Kettle"],
                   "choices": ["Tea", "Spoon", "Ella's Cup", "Lid"], "answer": 0}
  assert loaded.report.rows_read == 10 and loaded.report.rows_skipped == 0


@pytest.mark.parametrize("n", [10, 33, 120])
def test_splits_in_file_order(tmp_path, n):
  s = amazon.load(write(tmp_path / "a.csv", good_rows(n))).splits
  train_val = int(n * 0.8)
  train = int(train_val * 0.85)
  assert [len(s["train"]), len(s["val"]), len(s["test"])] == [train, train_val - train, n - train_val]
  ids = [e["id"] for k in ("train", "val", "test") for e in s[k]]
  assert ids == [f"amazon-{i}" for i in range(n)]


def test_split_sizes_for_120_rows(tmp_path):
  s = amazon.load(write(tmp_path / "a.csv", good_rows(120))).splits
  assert (len(s["train"]), len(s["val"]), len(s["test"])) == (81, 15, 24)


BAD = [
    # (column, cell, field, expected text)
    ("answer", "x", "answer", "expected an integer 0-3, got 'x'"),
    ("answer", "4", "answer", "expected an integer 0-3, got '4'"),
    ("answer", "-1", "answer", "expected an integer 0-3"),
    ("answer", "2.0", "answer", "expected an integer 0-3"),
    ("answer", "", "answer", "expected an integer 0-3, got ''"),
    ("choices", "['a', 'b'", "choices", "expected a Python-literal list of 4 strings"),
    ("choices", "['a', 'b', 'c']", "choices", "expected a Python-literal list of 4 strings"),
    ("choices", "{'a': 1}", "choices", "expected a Python-literal list of 4 strings"),
    ("choices", "__import__('os').getcwd()", "choices", "Python-literal list"),
    ("choices", "['a', 'b', 3, 'd']", "choices[2]", "expected a non-empty string, got 3"),
    ("choices", "['a', 'b', ' ', 'd']", "choices[2]", "expected a non-empty string"),
    ("question", "Pick one.\nMug", "question", "containing 'Product Sequence:'"),
    ("question", "Pick one.\nProduct Sequence:\n  \n", "question", "at least one product title"),
    ("question", "   ", "question", "expected a non-empty string"),
]


@pytest.mark.parametrize("column,cell,field,expected", BAD)
def test_bad_cell_raises_with_file_line_field(tmp_path, column, cell, field, expected):
  rows = good_rows(5)
  bad = dict(zip(amazon.COLUMNS, rows[2]), **{column: cell})
  rows[2] = tuple(bad[c] for c in amazon.COLUMNS)
  with pytest.raises(DataFormatError) as e:
    amazon.load(write(tmp_path / "amazon.csv", rows))
  # Rows 0 and 1 take lines 2-9 (header is line 1), so row 2 starts on line 10.
  assert str(e.value).startswith(f"amazon.csv line 10, field '{field}': ")
  assert expected in str(e.value)
  assert (e.value.file, e.value.line, e.value.field) == ("amazon.csv", 10, field)


def test_wrong_column_count_and_blank_lines(tmp_path):
  path = write(tmp_path / "amazon.csv", good_rows(1))
  with open(path, "a", encoding="utf-8") as f:
    f.write("\n\n\"only one cell\"\n")   # lines 6-7 blank, bad row on line 8
  with pytest.raises(DataFormatError, match=r"amazon.csv line 8: expected 3 columns, got 1 columns"):
    amazon.load(path)


def test_skip_mode_counts_and_splits_kept_rows(tmp_path):
  rows = good_rows(12)
  rows[3] = (QUESTION, CHOICES, "x")
  rows[7] = (QUESTION, "[1, 2]", "0")
  rows[8] = ("no marker", CHOICES, "0")
  loaded = amazon.load(write(tmp_path / "a.csv", rows), on_error="skip")
  r = loaded.report
  assert (r.rows_read, r.rows_skipped, r.rows_kept) == (12, 3, 9)
  assert r.reasons == {"answer": 1, "choices": 1, "question": 1}
  assert [e.line for e in r.errors] == [2 + 4 * 3, 2 + 4 * 7, 2 + 4 * 8]
  assert "skipped 3" in str(r)
  s = loaded.splits
  assert (len(s["train"]), len(s["val"]), len(s["test"])) == (5, 2, 2)   # 9 -> 7/2 -> int(5.95)/2
  assert "amazon-3" not in {e["id"] for k in s for e in s[k]}


def test_header_and_empty_file_always_raise(tmp_path):
  path = write(tmp_path / "a.csv", good_rows(2), header=("question", "choices", "label"))
  with pytest.raises(DataFormatError, match=r"a.csv line 1, field 'answer': expected a header"):
    amazon.load(path, on_error="skip")
  (tmp_path / "empty.csv").write_text("")
  with pytest.raises(DataFormatError, match="an empty file"):
    amazon.load(tmp_path / "empty.csv", on_error="skip")


def test_paths(tmp_path):
  for missing in (None, ""):
    with pytest.raises(DataPathError, match=r"Pass --config\.data\.path"):
      amazon.load(missing)
  with pytest.raises(DataPathError, match=r"config\.data\.path=.*" + amazon.FILENAME):
    amazon.load(tmp_path / "nope.csv")
  with pytest.raises(DataPathError, match=amazon.FILENAME):
    amazon.load(tmp_path)   # a folder without the file
  write(tmp_path / amazon.FILENAME, good_rows(3))
  assert amazon.load(tmp_path).report.rows_read == 3   # a folder holding it


def test_unknown_on_error(tmp_path):
  with pytest.raises(ValueError, match="on_error"):
    amazon.load(write(tmp_path / "a.csv", good_rows(1)), on_error="ignore")
