"""HotpotQA loader on small JSON-lines files written here."""

import copy
import json

import pytest

from optimas_jax.tasks.data import DataFormatError, DataPathError, hotpotqa


def row(i):
  titles = [f"Page {k}" for k in range(10)]
  return {"id": f"q{i}", "question": f"Who wrote {i}?", "answer": "Ann", "type": "bridge",
          "level": "hard",
          "supporting_facts": {"title": ["Page 1", "Page 4"], "sent_id": [0, 1]},
          "context": {"title": titles, "sentences": [[f"S{k}a.", f" S{k}b."] for k in range(10)]}}


def write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def test_sample_is_test(tmp_path):
  loaded = hotpotqa.load(write(tmp_path / "h.jsonl", [row(i) for i in range(7)]))
  assert loaded.splits["train"] == [] and loaded.splits["val"] == []
  assert [e["id"] for e in loaded.splits["test"]] == [f"q{i}" for i in range(7)]
  assert loaded.splits["test"][0] == row(0)
  assert loaded.report.rows_read == 7


def test_documented_split_option(tmp_path):
  path = write(tmp_path / "h.jsonl", [row(i) for i in range(7)])
  s = hotpotqa.load(path, train_fraction=0.6, val_fraction=0.2).splits
  assert [len(s[k]) for k in ("train", "val", "test")] == [4, 1, 2]   # int(4.2), int(1.4), rest
  assert s["val"][0]["id"] == "q4"
  with pytest.raises(ValueError, match="fractions"):
    hotpotqa.load(path, train_fraction=0.8, val_fraction=0.3)


def _set(r, dotted, value):
  *head, last = dotted.split(".")
  for k in head:
    r = r[k]
  if value is DROP:
    del r[last]
  else:
    r[last] = value


DROP = object()
BAD = [
    ("id", DROP, "id", "expected a non-empty string, got nothing (field missing)"),
    ("question", 7, "question", "expected a non-empty string, got 7"),
    ("answer", DROP, "answer", "field missing"),
    ("type", "other", "type", "expected one of bridge, comparison, got 'other'"),
    ("level", "", "level", "expected one of easy, medium, hard"),
    ("supporting_facts", [], "supporting_facts", "expected an object with keys title, sent_id"),
    ("supporting_facts.sent_id", [0], "supporting_facts.sent_id", "expected a list of 2 integers"),
    ("supporting_facts.sent_id", [0, "1"], "supporting_facts.sent_id[1]",
     "expected a non-negative integer, got '1'"),
    ("supporting_facts.sent_id", [0, True], "supporting_facts.sent_id[1]", "got True"),
    ("supporting_facts.title", "Page 1", "supporting_facts.title", "expected a list of"),
    ("context.title", [f"P{k}" for k in range(9)], "context.title",
     "expected a list of 10 non-empty strings"),
    ("context.sentences", [["a"]] * 9, "context.sentences", "expected a list of 10 lists"),
    ("context.sentences", [["a"]] * 9 + ["flat"], "context.sentences[9]", "expected a list of strings"),
    ("context.sentences", [["a"]] * 9 + [["ok", None]], "context.sentences[9][1]",
     "expected a string, got None"),
    ("context", DROP, "context", "field missing"),
]


@pytest.mark.parametrize("dotted,value,field,expected", BAD)
def test_bad_field_raises(tmp_path, dotted, value, field, expected):
  rows = [row(i) for i in range(4)]
  rows[2] = copy.deepcopy(rows[2])
  _set(rows[2], dotted, value)
  with pytest.raises(DataFormatError) as e:
    hotpotqa.load(write(tmp_path / "sample.jsonl", rows))
  assert str(e.value).startswith(f"sample.jsonl line 3, field '{field}': ")
  assert expected in str(e.value)


def test_skip_mode(tmp_path):
  rows = [row(i) for i in range(5)]
  rows[1]["type"] = "both"
  rows.insert(3, "")              # a blank line is not a row (line 4)
  rows.insert(4, "{broken")       # line 5
  loaded = hotpotqa.load(write(tmp_path / "h.jsonl", rows), on_error="skip")
  r = loaded.report
  assert (r.rows_read, r.rows_skipped, r.reasons) == (6, 2, {"type": 1, "row": 1})
  assert [e.line for e in r.errors] == [2, 5]
  assert [e["id"] for e in loaded.splits["test"]] == ["q0", "q2", "q3", "q4"]


def test_paths(tmp_path):
  with pytest.raises(DataPathError, match=r"Pass --config\.data\.path"):
    hotpotqa.load(None)
  with pytest.raises(DataPathError, match=r"config\.data\.path=.*" + hotpotqa.FILENAME):
    hotpotqa.load(tmp_path / "missing.jsonl")
