"""HotpotQA distractor setting: the reference's 100-question sample.

Example: the row's fields, validated and otherwise unchanged: {"id",
"question", "answer", "type", "level", "supporting_facts": {"title",
"sent_id"}, "context": {"title", "sentences"}}. Supporting facts are not
cross-checked against the context (the full HotpotQA set has a few stale
sentence ids; this sample has none). The sample is the reference's test set, so by default it all goes
to "test"; `train_fraction` / `val_fraction` carve train and val off its head
in file order (test numbers then no longer compare with the paper's).
"""

from __future__ import annotations

import os

from optimas_jax.tasks.data import common, fields, rows
from optimas_jax.tasks.data.fields import Bad

FILENAME = "hotpotqa_distractor_sample.jsonl"
TYPES = ("bridge", "comparison")
LEVELS = ("easy", "medium", "hard")
NUM_PARAGRAPHS = 10   # distractor setting: 2 gold + 8 distractor paragraphs


def parse_supporting_facts(value) -> dict:
  sf = fields.mapping(value, "supporting_facts", ("title", "sent_id"))
  titles = fields.text_list(fields.get(sf, "title"), "supporting_facts.title", nonempty=True)
  ids = fields.int_list(fields.get(sf, "sent_id"), "supporting_facts.sent_id",
                        length=len(titles))
  return {"title": titles, "sent_id": ids}


def parse_context(value) -> dict:
  ctx = fields.mapping(value, "context", ("title", "sentences"))
  titles = fields.text_list(fields.get(ctx, "title"), "context.title",
                            length=NUM_PARAGRAPHS, nonempty=True)
  paragraphs = fields.get(ctx, "sentences")
  if not isinstance(paragraphs, list) or len(paragraphs) != NUM_PARAGRAPHS:
    raise Bad("context.sentences", f"a list of {NUM_PARAGRAPHS} lists of strings", paragraphs)
  sentences = [fields.text_list(p, f"context.sentences[{i}]") for i, p in enumerate(paragraphs)]
  return {"title": titles, "sentences": sentences}


def parse_row(row: dict, position: int) -> dict:
  del position   # rows carry their own id
  return {
      "id": fields.text(fields.get(row, "id"), "id"),
      "question": fields.text(fields.get(row, "question"), "question"),
      "answer": fields.text(fields.get(row, "answer"), "answer"),
      "type": fields.one_of(fields.get(row, "type"), "type", TYPES),
      "level": fields.one_of(fields.get(row, "level"), "level", LEVELS),
      "supporting_facts": parse_supporting_facts(fields.get(row, "supporting_facts")),
      "context": parse_context(fields.get(row, "context")),
  }


def load(path: str | os.PathLike | None, on_error: str = "raise",
         train_fraction: float = 0.0, val_fraction: float = 0.0) -> common.Loaded:
  """Reads the JSON-lines file at `path` (or FILENAME inside the folder `path`).

  on_error="skip" drops malformed rows (counted in the report).
  """
  common.check_on_error(on_error)
  if min(train_fraction, val_fraction) < 0 or train_fraction + val_fraction > 1:
    raise ValueError(f"hotpotqa train_fraction={train_fraction}, val_fraction={val_fraction}: "
                     "two non-negative fractions summing to at most 1")
  file = common.resolve_file(path, "hotpotqa", FILENAME)
  examples, report = rows.validate(file, rows.jsonl_records(file), parse_row, on_error)
  n = len(examples)
  cut_train = int(n * train_fraction)
  cut_val = cut_train + int(n * val_fraction)
  return common.Loaded({"train": examples[:cut_train], "val": examples[cut_train:cut_val],
                        "test": examples[cut_val:]}, report)
