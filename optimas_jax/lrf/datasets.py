"""Preference groups from the task files in ../shared/data (and a synthetic set).

- amazon: a session (product sequence) and its 4 candidate next items,
  scored 1 for the ground-truth item, 0 otherwise. Split as the reference:
  first 80% of the file train(+val), last 20% test.
- pubmedqa: a question (+ context) and the answers yes/no/maybe, scored 1
  for the ground truth. Train file -> train, test file -> held out.
- synthetic: deterministic toy groups (tests; needs no files).
"""

from __future__ import annotations

import ast
import csv
import json
import pathlib

import numpy as np

from optimas_jax.lrf.data import Group

DESCRIPTIONS = {
    "amazon": "Given a user's recent product sequence, select the product "
              "the user will interact with next.",
    "pubmedqa": "Answer the biomedical research question with yes, no or "
                "maybe, based on the abstract.",
    "synthetic": "Pick an item that appears in the session.",
}


def _need(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    raise FileNotFoundError(f"{path} not found; set config.data.root to the "
                            "folder holding amazon/ and pubmedqa/")
  return path


def amazon_groups(root, component: int) -> tuple[list[Group], list[Group]]:
  path = _need(pathlib.Path(root) / "amazon" /
               "session_based_next_item_selection_dataset.csv")
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  groups = []
  for row in rows:
    session = row["question"].split("Product Sequence:", 1)[-1].strip()
    choices = ast.literal_eval(row["choices"])
    answer = int(row["answer"])
    groups.append(Group(
        component, (("product sequence", session),),
        tuple((("next product", c),) for c in choices),
        tuple(1.0 if i == answer else 0.0 for i in range(len(choices)))))
  n_train = int(len(groups) * 0.8)
  return groups[:n_train], groups[n_train:]


def _pubmed_file(path, component):
  groups = []
  with open(_need(path), encoding="utf-8") as f:
    for line in f:
      ex = json.loads(line)
      gt = ex["groundtruth"].strip().lower()
      answers = ("yes", "no", "maybe")
      groups.append(Group(
          component, (("question", ex["question"]),
                      ("context", " ".join(ex["context"]))),
          tuple((("answer", a),) for a in answers),
          tuple(1.0 if a == gt else 0.0 for a in answers)))
  return groups


def pubmedqa_groups(root, component: int):
  root = pathlib.Path(root) / "pubmedqa"
  return (_pubmed_file(root / "combined_PubMedQA_train.jsonl", component),
          _pubmed_file(root / "combined_PubMedQA_test.jsonl", component))


def synthetic_groups(component: int, n: int = 48, seed: int = 0):
  """Candidates that occur in the session score 1 (learnable from tokens)."""
  words = "red green blue apple pear bike car train shoe hat lamp desk".split()
  rng = np.random.default_rng(seed)
  groups = []
  for _ in range(n):
    session = " ".join(rng.choice(words, 4))
    cands = rng.choice(words, 4, replace=False)
    groups.append(Group(component, (("session", session),),
                        tuple((("item", str(c)),) for c in cands),
                        tuple(float(c in session.split()) for c in cands)))
  n_train = int(n * 0.75)
  return groups[:n_train], groups[n_train:]


def load_groups(data_cfg):
  """(train, held_out, descriptions): one component per task, in order."""
  train, held, descriptions = [], [], []
  for k, task in enumerate(data_cfg.tasks):
    if task == "amazon":
      tr, ev = amazon_groups(data_cfg.root, k)
    elif task == "pubmedqa":
      tr, ev = pubmedqa_groups(data_cfg.root, k)
    elif task == "synthetic":
      tr, ev = synthetic_groups(k, seed=k)
    else:
      raise ValueError(f"config.data.tasks: unknown task {task!r}; use "
                       f"{sorted(DESCRIPTIONS)}")
    if data_cfg.max_train_groups:
      tr = tr[:data_cfg.max_train_groups]
    if data_cfg.max_eval_groups:
      ev = ev[:data_cfg.max_eval_groups]
    train += tr
    held += ev
    descriptions.append(DESCRIPTIONS[task])
  return train, held, descriptions
