"""Local reward functions for the Optimas loop: one LRF, a head per component.

Bridges the loop's preference groups (collect/) and the LRF trainer:
renders fields to text, trains (initially and online, `Trainer.fit`),
scores batches of (component, input, output) triples for the local
optimizers, and measures pairwise accuracy on fresh pairs (the live
local-global alignment).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optimas_jax.lrf.config import validate_lrf_config
from optimas_jax.lrf.data import Group, encode_groups
from optimas_jax.lrf.model import build_lrf
from optimas_jax.lrf.score import Scorer
from optimas_jax.lrf.text import TextEncoder
from optimas_jax.lrf.train import Trainer
from optimas_jax.core.seeds import derive_seed

if TYPE_CHECKING:  # collect/ sits above lrf/: its groups are only read here
  from optimas_jax.collect.preferences import PreferenceGroup

_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)")


def render_value(value, list_items: str = "full") -> str:
  """A field value as LRF text; list items one per line.

  `list_items="first_sentence"` shows each item of a list (e.g. retrieved
  passages) by its first sentence: the output stays whole (every item is
  there and identifiable) while its token count stays bounded.
  """
  if isinstance(value, (list, tuple)):
    items = [render_value(v) for v in value]
    if list_items == "first_sentence":
      items = [(_FIRST_SENTENCE.match(t) or [None, t])[1] for t in items]
    return "\n".join(f"  {i + 1}. {t}" for i, t in enumerate(items))
  return str(value)


class LocalRewards:
  """The LRF of every optimizable component, trained by grouped Bradley-Terry."""

  SCORE_ROWS = 32

  def __init__(self, cfg, components: Sequence[tuple[str, str]], seed: int):
    validate_lrf_config(cfg, jax.device_count())
    from optimas_jax.models.registry import load_backbone  # heavy; import late
    backbone = load_backbone(cfg.backbone, jnp.dtype(cfg.dtype))
    self.cfg = cfg
    self.names = [n for n, _ in components]
    self.index = {n: i for i, n in enumerate(self.names)}
    self.encoder = TextEncoder(backbone.tokenizer, [d for _, d in components], cfg.max_len,
                               cfg.template, cfg.field_template)
    self.lrf = build_lrf(backbone, len(components), cfg)
    # A constant schedule: online updates have no known end.
    self.trainer = Trainer(self.lrf, cfg, len(components), total_steps=10**6)
    self.state = self.trainer.init_state(jax.random.PRNGKey(seed), backbone.params)
    # With a frozen prefix, scoring reuses the lower-layer activations the
    # trainer caches per text: only the trainable top runs per LRF version.
    self.scorer = Scorer(self.lrf, self.encoder, cfg.buckets, batch_rows=self.SCORE_ROWS,
                         activations=self.trainer.cache)
    self.seed = seed
    self._frozen_digest: str | None = None
    self._sync_scorer()

  # ------------------------------------------------------- checkpoints

  def text_stats(self) -> dict:
    """What the LRF's text encoder did so far (cumulative): texts rendered, truncations and
    tokens cut, candidates merged or dropped, pairless groups; and activation-cache evictions."""
    stats = dict.fromkeys(("texts", "truncated_texts", "truncated_descriptions",
                           "merged_candidates", "dropped_candidates", "pairless_groups"), 0)
    stats.update({k: int(v) for k, v in sorted(self.encoder.stats.items())})
    cache = self.trainer.cache
    if cache is not None:
      stats["activation_cache_evictions"] = int(cache.evictions)
    return stats

  def checkpoint_arrays(self) -> dict:
    """What a loop checkpoint keeps of the LRF: step, trained part, optimizer.

    The frozen backbone (~90 MB for MiniLM, once per kept step) is not saved:
    a resumed run reloads it from config.lrf.backbone, and `frozen_digest`
    (saved beside) proves it is the same.
    """
    return {"step": self.state.step, "trainable": self.state.trainable,
            "opt_state": self.state.opt_state}

  def restore_arrays(self, arrays: dict, frozen_digest: str | None) -> None:
    if frozen_digest is not None and frozen_digest != self.frozen_digest():
      raise ValueError(
          "the checkpoint's LRF was trained on top of different frozen weights than "
          f"config.lrf.backbone={self.cfg.backbone!r} (dtype {self.cfg.dtype}) gives now; "
          "resume with the run's original config.lrf, or start a new workdir")
    self.state = self.state.replace(**arrays)
    self._sync_scorer()

  def frozen_digest(self) -> str:
    """Hash of the frozen weights' names, shapes, dtypes and values."""
    if self._frozen_digest is None:
      h = hashlib.blake2b(digest_size=16)
      for path, leaf in jax.tree_util.tree_flatten_with_path(self.state.frozen)[0]:
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
      self._frozen_digest = h.hexdigest()
    return self._frozen_digest

  # ------------------------------------------------------------- text

  def _fields(self, d: dict) -> tuple[tuple[str, str], ...]:
    return tuple((k.replace("_", " "), render_value(v, self.cfg.list_items))
                 for k, v in d.items())

  def _group(self, g: PreferenceGroup) -> Group:
    return Group(self.index[g.component], self._fields(g.inputs),
                 tuple(self._fields(c) for c in g.candidates), tuple(g.scores))

  # ------------------------------------------------------------ train

  def _sync_scorer(self):
    self.scorer.update(self.state.trainable, self.state.frozen, int(self.state.step))

  def train(self, groups: Sequence[PreferenceGroup], epochs: int, tag: str,
            only_head: str | None = None) -> dict:
    """`epochs` passes over `groups`; returns steps, mean loss, accuracy, pairs.

    `only_head=None` trains everything config.lrf.trainable names (the
    initial training). `only_head=<component>` is an online update that
    changes that component's head only: the shared layers (top layers with
    trainable="top", LoRA) and every other head stay bit-identical, so one
    component's fresh pairs cannot move the other components' rewards.
    Groups of other components are skipped then (they would not move that
    head). `tag` seeds the batch order.
    """
    rows = [self._group(g) for g in groups]
    mask = None
    if only_head is not None:
      if only_head not in self.index:
        raise ValueError(f"only_head={only_head!r}: not an optimizable component; "
                         f"use one of {self.names}")
      k = self.index[only_head]
      rows = [g for g in rows if g.component == k]
      mask = self.trainer.update_mask(self.state.trainable, k)
    encoded = encode_groups(rows, self.encoder, self.cfg.max_candidates)
    if not encoded:
      return {"steps": 0, "loss": 0.0, "accuracy": 0.0, "pairs": 0.0}
    self.trainer.prepare(encoded, self.state.frozen)
    plan_seed = derive_seed(self.seed, "lrf-plan", tag) & 0x7FFFFFFF
    self.state, summary = self.trainer.fit(self.state, encoded, epochs, plan_seed,
                                           update_mask=mask)
    self._sync_scorer()
    return summary

  # ------------------------------------------------------------ score

  def score(self, component: str, inputs: Sequence[dict], outputs: Sequence[dict]) -> np.ndarray:
    """(N,) local rewards of `outputs` given `inputs` for `component`."""
    return self.score_many([(component, i, o) for i, o in zip(inputs, outputs)])

  def score_many(self, triples: Sequence[tuple[str, dict, dict]]) -> np.ndarray:
    """Rewards of many (component, inputs, outputs), any mix of components, in one pass."""
    return self.scorer.score([(self.index[c], self._fields(i), self._fields(o))
                              for c, i, o in triples])

  def pairwise_accuracy(self, groups: Sequence[PreferenceGroup]) -> dict[str, float]:
    """Per component: the share of preference pairs the LRF orders correctly (ties wrong)."""
    triples = [(g.component, g.inputs, c) for g in groups for c in g.candidates]
    flat = self.score_many(triples) if triples else np.zeros(0)
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    at = 0
    for g in groups:
      r = flat[at:at + len(g.candidates)]
      at += len(g.candidates)
      for i, j in g.pairs():
        total[g.component] = total.get(g.component, 0) + 1
        right[g.component] = right.get(g.component, 0) + int(r[i] > r[j])
    return {c: right.get(c, 0) / n for c, n in total.items()}
