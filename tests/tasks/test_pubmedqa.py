"""PubMedQA loader on small JSON-lines folders written here."""

import json

import pytest

from optimas_jax.tasks.data import DataFormatError, DataPathError, pubmedqa


def row(split, i, **over):
  r = {"index": f"PubMedQA_{split}_{i}", "key": str(1000 + i), "question": f"Does {i} help?",
       "context": ["Background.", "Results."], "groundtruth": ("yes", "no", "maybe")[i % 3]}
  r.update(over)
  return {k: v for k, v in r.items() if v is not DROP}


DROP = object()


def write(folder, train, test):
  for name, rows in ((pubmedqa.TRAIN_FILE, train), (pubmedqa.TEST_FILE, test)):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
  return folder


def good(n_train, n_test):
  return [row("train", i) for i in range(n_train)], [row("test", i) for i in range(n_test)]


@pytest.mark.parametrize("n_train", [20, 41, 500])
def test_splits(tmp_path, n_train):
  loaded = pubmedqa.load(write(tmp_path, *good(n_train, 7)))
  s, cut = loaded.splits, int(n_train * 0.95)
  assert (len(s["train"]), len(s["val"]), len(s["test"])) == (cut, n_train - cut, 7)
  assert s["val"][0]["id"] == f"PubMedQA_train_{cut}"   # file order, no shuffle
  assert s["test"][0] == {"id": "PubMedQA_test_0", "index": "PubMedQA_test_0", "key": "1000",
                          "question": "Does 0 help?", "context": ["Background.", "Results."],
                          "groundtruth": "yes"}
  assert loaded.report.rows_read == n_train + 7
  assert len(loaded.report.files) == 2


def test_500_train_rows_give_475_25(tmp_path):
  s = pubmedqa.load(write(tmp_path, *good(500, 1))).splits
  assert (len(s["train"]), len(s["val"])) == (475, 25)


BAD = [
    ({"index": DROP}, "index", "expected a non-empty string, got nothing (field missing)"),
    ({"key": 1234}, "key", "expected a non-empty string, got 1234"),
    ({"question": ""}, "question", "expected a non-empty string, got ''"),
    ({"context": "one string"}, "context", "expected a list of strings, got 'one string'"),
    ({"context": ["ok", 5]}, "context[1]", "expected a string, got 5"),
    ({"groundtruth": "Yes"}, "groundtruth", "expected one of yes, no, maybe, got 'Yes'"),
    ({"groundtruth": None}, "groundtruth", "expected one of yes, no, maybe, got None"),
]


@pytest.mark.parametrize("over,field,expected", BAD)
def test_bad_field_raises(tmp_path, over, field, expected):
  train, test = good(6, 2)
  train[3] = row("train", 3, **over)
  with pytest.raises(DataFormatError) as e:
    pubmedqa.load(write(tmp_path, train, test))
  assert str(e.value).startswith(f"{pubmedqa.TRAIN_FILE} line 4, field '{field}': ")
  assert expected in str(e.value)


@pytest.mark.parametrize("line,expected", [
    ('{"index": "x", ', "expected a JSON object, got invalid JSON"),
    ('["a", "b"]', "expected a JSON object, got a JSON list"),
])
def test_bad_json_in_test_file(tmp_path, line, expected):
  train, test = good(3, 3)
  test[1] = line
  with pytest.raises(DataFormatError, match=f"{pubmedqa.TEST_FILE} line 2: {expected}"):
    pubmedqa.load(write(tmp_path, train, test))


def test_skip_mode_merges_both_files(tmp_path):
  train, test = good(20, 4)
  train[0] = row("train", 0, groundtruth="unsure")
  train[5] = "not json"
  test[2] = row("test", 2, context=None)
  loaded = pubmedqa.load(write(tmp_path, train, test), on_error="skip")
  r = loaded.report
  assert (r.rows_read, r.rows_skipped) == (24, 3)
  assert r.reasons == {"groundtruth": 1, "row": 1, "context": 1}
  assert [(e.file, e.line) for e in r.errors] == [
      (pubmedqa.TRAIN_FILE, 1), (pubmedqa.TRAIN_FILE, 6), (pubmedqa.TEST_FILE, 3)]
  s = loaded.splits
  assert (len(s["train"]), len(s["val"]), len(s["test"])) == (17, 1, 3)   # 18 kept -> int(17.1)


def test_paths(tmp_path):
  with pytest.raises(DataPathError, match=r"Pass --config\.data\.path"):
    pubmedqa.load(None)
  with pytest.raises(DataPathError, match=r"config\.data\.path=.*combined_PubMedQA_train"):
    pubmedqa.load(tmp_path / "nope")
  (tmp_path / pubmedqa.TRAIN_FILE).write_text(json.dumps(row("train", 0)) + "\n")
  with pytest.raises(DataPathError, match=f"lacks {pubmedqa.TEST_FILE}"):
    pubmedqa.load(tmp_path)
  with pytest.raises(DataPathError, match="not a folder"):
    pubmedqa.load(tmp_path / pubmedqa.TRAIN_FILE)
