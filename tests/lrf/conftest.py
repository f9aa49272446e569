"""Shared fixtures: the tiny random BERT backbone and synthetic groups."""

import pytest

from optimas_jax.lrf import datasets
from optimas_jax.lrf.config import default_lrf_config
from optimas_jax.lrf.data import encode_groups
from optimas_jax.lrf.model import build_lrf
from optimas_jax.lrf.text import TextEncoder


@pytest.fixture(scope="session")
def backbone():
  from optimas_jax.models.registry import load_backbone
  return load_backbone("tiny-bert")


def small_cfg(**kw):
  c = default_lrf_config()
  c.backbone = "tiny-bert"
  c.max_len = 64
  c.buckets = (32, 64)
  c.groups_per_batch = 4
  c.optim.lr = 1e-2
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture(scope="session")
def groups(backbone):
  """(encoded train groups, encoded held-out groups, TextEncoder)."""
  train, held = datasets.synthetic_groups(0, n=32)
  train2, held2 = datasets.synthetic_groups(1, n=16, seed=1)
  enc = TextEncoder(backbone.tokenizer, [datasets.DESCRIPTIONS["synthetic"]] * 2, 64)
  return (encode_groups(train + train2, enc, 4),
          encode_groups(held + held2, enc, 4), enc)


def make_lrf(backbone, **kw):
  return build_lrf(backbone, 2, small_cfg(**kw))
