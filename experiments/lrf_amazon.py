"""python -m optimas_jax.main --config=experiments/lrf_amazon.py --workdir=runs/lrf_amazon

Trains a local reward function (issue 4) on real preference groups: Amazon
next-item sessions with their 4 candidate items (and PubMedQA answers as a
second component), MiniLM backbone, top layer + heads trained, 128 tokens.
`:smoke` shrinks everything (tiny random backbone, a few groups, 2 epochs)
for the end-to-end test: --config=experiments/lrf_amazon.py:smoke
"""

import pathlib

import ml_collections

from optimas_jax.lrf.config import default_lrf_config

# ../shared/data beside the repository root (see its README).
DATA_ROOT = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.job = "lrf"
  c.data = ml_collections.ConfigDict(dict(
      root=str(DATA_ROOT), tasks=("amazon", "pubmedqa"),
      max_train_groups=0, max_eval_groups=0))   # 0 = all
  c.lrf = default_lrf_config()
  c.lrf.backbone = "minilm"
  c.lrf.trainable = "top"
  c.lrf.top_layers = 1
  c.lrf.optim.lr = 3e-4
  c.lrf.epochs = 10
  c.lrf.groups_per_batch = 16
  if arg == "smoke":
    c.lrf.backbone = "tiny-bert"
    c.data.tasks = ("amazon",) if DATA_ROOT.exists() else ("synthetic",)
    c.data.max_train_groups = 16
    c.data.max_eval_groups = 8
    c.lrf.buckets = (64, 128)
    c.lrf.groups_per_batch = 4
    c.lrf.epochs = 2
    c.lrf.log_every = 1
    c.lrf.checkpoint_every = 2
  elif arg:
    raise ValueError(f"experiments/lrf_amazon.py: unknown config arg(s) [{arg!r}]; "
                     "known: ['smoke'] (e.g. --config=experiments/lrf_amazon.py:smoke)")
  return c
