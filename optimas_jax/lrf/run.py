"""`run(config, workdir)`: build preference groups, train the LRF, evaluate.

Writes workdir/metrics.jsonl (one JSON line per logged
step; `split` is "train" or "eval") and orbax checkpoints under
workdir/checkpoints. Called by optimas_jax.main when config.job == "lrf".
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from optimas_jax import checkpoint
from optimas_jax.core.mesh import is_writer
from optimas_jax.metrics_log import MetricsLog
from optimas_jax.lrf import datasets
from optimas_jax.lrf.buckets import plan_epoch
from optimas_jax.lrf.config import validate_lrf_config
from optimas_jax.lrf.data import encode_groups
from optimas_jax.lrf.model import build_lrf
from optimas_jax.lrf.text import TextEncoder
from optimas_jax.lrf.train import StepEnd, Trainer, raise_if_not_finite, steps_per_epoch


def _train_record(step, metrics, lr):
  """A train metric line; the one host read of a logged step's metrics."""
  m = jax.device_get(metrics)
  loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
  raise_if_not_finite(step, loss, lr, grad_norm)
  pairs = np.maximum(np.asarray(m["pairs"]), 1)
  return dict(step=step, split="train", loss=loss, grad_norm=grad_norm,
              per_component=dict(
                  pairs=np.asarray(m["pairs"]).tolist(),
                  loss=(np.asarray(m["nll"]) / pairs).tolist(),
                  accuracy=(np.asarray(m["correct"]) / pairs).tolist(),
                  score_gap=(np.asarray(m["gap"]) / pairs).tolist(),
                  head_grad_norm=np.asarray(m["head_grad_norm"]).tolist()))


def run(config, workdir) -> dict:
  """Trains and evaluates the LRF; resumes from workdir's checkpoint."""
  cfg = config.lrf
  validate_lrf_config(cfg, jax.device_count())
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  metrics = MetricsLog(workdir / "metrics.jsonl")

  from optimas_jax.models.registry import load_backbone  # heavy; import late
  backbone = load_backbone(cfg.backbone, jnp.dtype(cfg.dtype))
  train_groups, eval_groups, descriptions = datasets.load_groups(config.data)
  encoder = TextEncoder(backbone.tokenizer, descriptions, cfg.max_len,
                        cfg.template, cfg.field_template)
  train = encode_groups(train_groups, encoder, cfg.max_candidates)
  held = encode_groups(eval_groups, encoder, cfg.max_candidates)
  if not train:
    raise ValueError("no training group has a pair; check config.data")
  logging.info("lrf: %d train / %d eval groups, text stats %s", len(train),
               len(held), dict(encoder.stats))

  k = len(descriptions)
  lrf = build_lrf(backbone, k, cfg)
  total = steps_per_epoch(train, cfg) * cfg.epochs
  trainer = Trainer(lrf, cfg, k, total)
  rng = jax.random.PRNGKey(cfg.seed)
  state = trainer.init_state(rng, backbone.params)

  mngr = checkpoint.manager(workdir / "checkpoints", max_to_keep=2)
  # Resume order: workdir checkpoint > fresh state from the registry backbone.
  restored = checkpoint.restore_latest(mngr, state)
  if restored is not None:
    state, meta = restored
    logging.info("lrf: resumed at step %d (%s)", int(state.step), meta)
  start = int(jax.device_get(state.step))
  trainer.prepare(train + held, state.frozen)
  per_step = cfg.groups_per_batch * cfg.accum_steps
  eval_plan = plan_epoch(held, cfg.buckets, per_step, cfg.seed, 0, shuffle=False)

  def evaluate(state, step):
    rec = dict(step=step, split="eval",
               per_component=trainer.evaluate(state, held, eval_plan))
    metrics.write(rec)
    return rec

  t0, last_eval = time.time(), None

  def on_step(end: StepEnd):
    nonlocal last_eval
    if end.step % cfg.log_every == 0 or end.last:
      rec = _train_record(end.step, end.metrics, cfg.optim.lr)
      rec["elapsed_s"] = time.time() - t0
      rec["epoch"] = end.epoch
      metrics.write(rec)
    if end.epoch_end and held:
      last_eval = evaluate(end.state, end.step)
    if end.step % cfg.checkpoint_every == 0 or end.last:
      checkpoint.save(mngr, end.step, end.state, dict(epoch=end.epoch, step=end.step))

  state, _ = trainer.fit(state, train, cfg.epochs, cfg.seed, start_step=start,
                         rng=rng, on_step=on_step)
  if last_eval is None and held:
    last_eval = evaluate(state, int(state.step))
  mngr.wait_until_finished()
  mngr.close()
  summary = dict(step=int(state.step), total_steps=total,
                 text_stats=dict(encoder.stats),
                 eval=(last_eval or {}).get("per_component", {}))
  if is_writer():
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary
