"""A stark-qa release (STaRK-Prime or another STaRK KB), read from a local folder.

Layout (the release's `qa/<name>/` folder plus the reference's candidate files):

  <path>/stark_qa/stark_qa.csv          columns id, query, answer_ids ("[123, 456]")
  <path>/split/train.index              one query id per line (also val, test)
  <path>/processed/filtered_<split>_ids.json
      {"<position>": {"candidate_ids": [...], "simiarity": [...],
                      "relation_info": [...], "text_info": [...]}, ...}

The candidate files are what the reference's `dataset_engine` writes after
its first stage (vector similarity over the KB) and its node-text
extraction: per query, the candidate node ids, their similarity scores (the
system's `emb_scores`; the key's spelling is the reference's), and each
candidate's relations and properties as text. Their keys are positions in
the sorted list of CSV ids, as the reference's `STaRKDataset` indexes
queries. STaRK's knowledge base itself (pickles and torch tensors) is not
read here; the texts come from the candidate files.

Malformed rows raise `DataFormatError` naming the file, line and field, or
with on_error="skip" are dropped and counted in the report.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from optimas_jax.tasks.data import common, fields, rows
from optimas_jax.tasks.data.common import DataFormatError, LoadReport

QA_FILE = "stark_qa/stark_qa.csv"
SPLITS = ("train", "val", "test")
CANDIDATE_FIELDS = ("candidate_ids", "simiarity", "relation_info", "text_info")


def index_file(split: str) -> str:
  return f"split/{split}.index"


def candidate_file(split: str) -> str:
  return f"processed/filtered_{split}_ids.json"


def _id_list(value, field: str) -> list[int]:
  """A list of node ids: a JSON/Python list literal of non-negative ints, or a list."""
  parsed = value
  if isinstance(value, str):
    try:
      parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      raise fields.Bad(field, "a list of integer ids like [12, 34]", value) from None
  if not isinstance(parsed, list) or not parsed:
    raise fields.Bad(field, "a non-empty list of integer ids", value)
  for i, item in enumerate(parsed):
    if not isinstance(item, int) or isinstance(item, bool) or item < 0:
      raise fields.Bad(f"{field}[{i}]", "a non-negative integer", item)
  return list(parsed)


def parse_qa_row(row: dict, position: int) -> dict:
  del position
  return {"query_id": fields.int_text(fields.get(row, "id"), "id", 0, 10**12),
          "question": fields.text(fields.get(row, "query"), "query"),
          "answer_ids": _id_list(fields.get(row, "answer_ids"), "answer_ids")}


def parse_candidates(entry, key: str) -> dict:
  """One candidate entry; the field names carry the entry's key."""
  if not isinstance(entry, dict):
    raise fields.Bad(key, "an object with " + ", ".join(CANDIDATE_FIELDS), entry)
  ids = _id_list(fields.get(entry, "candidate_ids"), f"{key}.candidate_ids")
  n = len(ids)
  sims = fields.get(entry, "simiarity")
  if not (isinstance(sims, list) and len(sims) == n and
          all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in sims)):
    raise fields.Bad(f"{key}.simiarity", f"a list of {n} numbers (one per candidate)", sims)
  return {"candidate_ids": ids, "emb_scores": [float(s) for s in sims],
          "relation_info": fields.text_list(fields.get(entry, "relation_info"),
                                            f"{key}.relation_info", length=n),
          "text_info": fields.text_list(fields.get(entry, "text_info"), f"{key}.text_info",
                                        length=n)}


def _line_of(raw: str, key: str) -> int:
  at = raw.find(f'"{key}"')
  return raw.count("\n", 0, at) + 1 if at >= 0 else 1


def _read_index(path: Path, known: set[int], on_error: str) -> tuple[list[int], list, int]:
  """(query ids in file order, errors, tokens read)."""
  ids, errors, read = [], [], 0
  for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    for token in text.split():
      read += 1
      err = None
      if not (token.isascii() and token.isdigit()):
        err = DataFormatError(path.name, line, None, "a query id (an integer)", repr(token))
      elif int(token) not in known:
        err = DataFormatError(path.name, line, None, f"a query id present in {QA_FILE}",
                              token)
      if err is None:
        ids.append(int(token))
      elif on_error == "raise":
        raise err
      else:
        errors.append(err)
  return ids, errors, read


def load(path: str | os.PathLike | None, on_error: str = "raise") -> common.Loaded:
  """Examples with question, answer_ids and the candidates' ids, scores and texts.

  A split holds the queries of its index file that have a candidate entry,
  in index-file order (the reference scored only a prefix of each split).
  """
  common.check_on_error(on_error)
  names = [QA_FILE] + [index_file(s) for s in SPLITS] + [candidate_file(s) for s in SPLITS]
  files = common.resolve_folder(path, "stark", names)
  qa_path = files[QA_FILE]
  records = list(rows.csv_records(qa_path, ("id", "query", "answer_ids")))
  # The reference keys candidates by position in the sorted list of every CSV
  # id, so a skipped row keeps its place; a row without a readable id would
  # shift every position after it, and is an error even with on_error="skip".
  all_ids = []
  for line, record in records:
    try:
      all_ids.append(fields.int_text(fields.get(record, "id") if isinstance(record, dict)
                                     else fields.MISSING, "id", 0, 10**12))
    except fields.Bad as bad:
      raise DataFormatError(qa_path.name, line, "id", "an integer id (candidate files key "
                            "queries by their position among all ids, so this row cannot be "
                            "skipped)", bad.got) from None
  sorted_ids = sorted(all_ids)
  qa_rows, report = rows.validate(qa_path, iter(records), parse_qa_row, on_error)
  by_id = {r["query_id"]: r for r in qa_rows}
  splits = {}
  for split in SPLITS:
    order, index_errors, index_read = _read_index(files[index_file(split)], set(by_id),
                                                  on_error)
    in_split = set(order)
    cpath = files[candidate_file(split)]
    raw = cpath.read_text(encoding="utf-8")
    try:
      entries = json.loads(raw)
    except json.JSONDecodeError as e:
      raise DataFormatError(cpath.name, e.lineno, None, "a JSON object", f"invalid JSON ({e.msg})")
    if not isinstance(entries, dict):
      raise DataFormatError(cpath.name, 1, None, "a JSON object keyed by query position",
                            f"a JSON {type(entries).__name__}")
    found, errors = {}, list(index_errors)
    for key, entry in entries.items():
      try:
        if not (key.isascii() and key.isdigit() and int(key) < len(sorted_ids)):
          raise fields.Bad(None, f"a key that is a query position 0-{len(sorted_ids) - 1}",
                           key)
        if sorted_ids[int(key)] not in by_id:
          raise fields.Bad(None, f"the position of a query that {QA_FILE} holds intact", key,
                           shown=f"{key} (query id {sorted_ids[int(key)]}, a skipped row)")
        qa = by_id[sorted_ids[int(key)]]
        if qa["query_id"] not in in_split:
          raise fields.Bad(None, f"the position of a query listed in {index_file(split)}",
                           key, shown=f"{key} (query id {qa['query_id']})")
        found[qa["query_id"]] = {"id": str(qa["query_id"]), "question": qa["question"],
                                 "answer_ids": qa["answer_ids"], **parse_candidates(entry, key)}
      except fields.Bad as bad:
        err = DataFormatError(cpath.name, _line_of(raw, key), bad.field, bad.expected, bad.got)
        if on_error == "raise":
          raise err from None
        errors.append(err)
    splits[split] = [found[q] for q in order if q in found]
    report = report.merge(LoadReport((str(files[index_file(split)]), str(cpath)),
                                     index_read + len(entries), tuple(errors)))
  return common.Loaded(splits, report)
