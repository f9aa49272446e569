"""Preference groups from the task files in ../shared/data (and a synthetic set).

- amazon: a session (product sequence) and its 4 candidate next items,
  scored 1 for the ground-truth item, 0 otherwise. Parsed and split by the
  task's loader (tasks/data/amazon.py): its train+val -> train, test -> held out.
- pubmedqa: a question (+ context) and the answers yes/no/maybe, scored 1
  for the ground truth; the task's loader's train+val -> train, test -> held out.
- synthetic: deterministic toy groups (tests; needs no files).
"""

from __future__ import annotations

import pathlib

import numpy as np

from optimas_jax.lrf.data import Group
from optimas_jax.tasks.data import amazon as amazon_data
from optimas_jax.tasks.data import pubmedqa as pubmedqa_data

DESCRIPTIONS = {
    "amazon": "Given a user's recent product sequence, select the product "
              "the user will interact with next.",
    "pubmedqa": "Answer the biomedical research question with yes, no or "
                "maybe, based on the abstract.",
    "synthetic": "Pick an item that appears in the session.",
}


def amazon_groups(root, component: int) -> tuple[list[Group], list[Group]]:
  """Train+val of the task's split (tasks/data/amazon.py) -> train; its test -> held out."""
  splits = amazon_data.load(pathlib.Path(root) / "amazon").splits

  def group(ex):
    session = ex["question"].split(amazon_data.MARKER, 1)[-1].strip()
    return Group(component, (("product sequence", session),),
                 tuple((("next product", c),) for c in ex["choices"]),
                 tuple(1.0 if i == ex["answer"] else 0.0 for i in range(len(ex["choices"]))))

  return ([group(ex) for ex in splits["train"] + splits["val"]],
          [group(ex) for ex in splits["test"]])


def pubmedqa_groups(root, component: int) -> tuple[list[Group], list[Group]]:
  """The train file (train+val of tasks/data/pubmedqa.py) -> train; the test file -> held out."""
  splits = pubmedqa_data.load(pathlib.Path(root) / "pubmedqa").splits

  def group(ex):
    return Group(component, (("question", ex["question"]), ("context", " ".join(ex["context"]))),
                 tuple((("answer", a),) for a in pubmedqa_data.LABELS),
                 tuple(1.0 if a == ex["groundtruth"] else 0.0 for a in pubmedqa_data.LABELS))

  return ([group(ex) for ex in splits["train"] + splits["val"]],
          [group(ex) for ex in splits["test"]])


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
