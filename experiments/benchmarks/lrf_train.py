"""python experiments/benchmarks/lrf_train.py --repeats=3

(full: --tasks=amazon,pubmedqa --pubmed_train=120 --torch_epochs=3; ~20 min)

LRF training throughput and time-to-accuracy, side by side on this machine:
(a) this project's trainer (grouped Bradley-Terry, frozen-layer activation
    cache, length buckets, jit) and
(b) a PyTorch reference-design trainer (HF BertModel + K-way linear head,
    one forward per chosen and per rejected text, float32, AdamW), with the
    same trainable set (top layer(s) + heads, or heads only).
Both read the same token ids (template + middle truncation at 128 tokens)
of real preference groups: Amazon sessions x 4 candidate items and PubMedQA
questions x yes/no/maybe, scored by ground truth. Prints one JSON object.
Needs ../shared/data and, for (b): pip install torch==2.13.0 'transformers>=5,<6'.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import numpy as np

from optimas_jax.lrf import datasets
from optimas_jax.lrf.buckets import plan_epoch
from optimas_jax.lrf.config import default_lrf_config
from optimas_jax.lrf.data import encode_groups
from optimas_jax.lrf.model import build_lrf
from optimas_jax.lrf.text import TextEncoder
from optimas_jax.lrf.train import Trainer
from optimas_jax.models import packages
from optimas_jax.models.registry import load_backbone

ROOT = pathlib.Path(__file__).resolve().parents[2]


def parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[2])
  p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
  p.add_argument("--tasks", default="amazon")
  p.add_argument("--pubmed_train", type=int, default=120)
  p.add_argument("--pubmed_eval", type=int, default=100)
  p.add_argument("--max_len", type=int, default=128)
  p.add_argument("--trainable", default="heads", choices=("heads", "top"))
  p.add_argument("--top_layers", type=int, default=1)
  p.add_argument("--epochs", type=int, default=30,
                 help="(a) epochs: cheap once the frozen features are cached")
  p.add_argument("--torch_epochs", type=int, default=2)
  p.add_argument("--torch_evals_per_epoch", type=int, default=2)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--groups_per_batch", type=int, default=4)
  p.add_argument("--torch_pairs_per_batch", type=int, default=32)
  p.add_argument("--target", type=float, default=0.75)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


def load_groups(args):
  """Raw groups per task (one component each); PubMedQA capped for time."""
  train, held, desc = [], [], []
  for k, task in enumerate(args.tasks.split(",")):
    if task == "amazon":
      tr, ev = datasets.amazon_groups(args.data, k)
    elif task == "pubmedqa":
      tr, ev = datasets.pubmedqa_groups(args.data, k)
      tr, ev = tr[:args.pubmed_train], ev[:args.pubmed_eval]
    else:
      raise ValueError(f"--tasks: unknown {task!r}; use amazon,pubmedqa")
    train, held = train + tr, held + ev
    desc.append(datasets.DESCRIPTIONS[task])
  return train, held, desc


def pairs_of(groups):
  """Flat (chosen, rejected, component) rows: every ordered pair with a gap."""
  rows = []
  for g in groups:
    for i in range(len(g.ids)):
      for j in range(len(g.ids)):
        if g.scores[i] - g.scores[j] > 1e-6:
          rows.append((g.ids[i], g.ids[j], g.component))
  return rows


# ----------------------------------------------------------------------------
# (a) this project's trainer


def run_jax(args, backbone, train, held, k, seed):
  cfg = default_lrf_config()
  cfg.trainable, cfg.top_layers = args.trainable, args.top_layers
  cfg.max_len, cfg.buckets = args.max_len, (64, args.max_len)
  cfg.optim.lr, cfg.optim.warmup_steps = args.lr, 5
  cfg.groups_per_batch = args.groups_per_batch
  per_step = cfg.groups_per_batch
  steps_per_epoch = len(plan_epoch(train, cfg.buckets, per_step, seed, 0))
  n_pairs = sum(g.num_pairs() for g in train)
  t_start = time.perf_counter()
  lrf = build_lrf(backbone, k, cfg)
  trainer = Trainer(lrf, cfg, k, steps_per_epoch * args.epochs)
  state = trainer.init_state(jax.random.PRNGKey(seed), backbone.params)
  trainer.prepare(train, state.frozen)   # frozen-prefix cache fill (timed)
  t_setup = time.perf_counter() - t_start
  trainer.prepare(held, state.frozen)    # eval-only features: untimed, as (b)'s eval
  eval_plan = plan_epoch(held, cfg.buckets, per_step, seed, 0, shuffle=False)
  clock, curve, epoch_times = t_setup, [], []
  rng = jax.random.PRNGKey(seed)
  for epoch in range(args.epochs):
    t0 = time.perf_counter()
    for length, idxs in plan_epoch(train, cfg.buckets, per_step, seed, epoch):
      state, m = trainer.step_fn(state, trainer.batch(train, idxs, length), rng)
    jax.block_until_ready(m)
    epoch_times.append(time.perf_counter() - t0)
    clock += epoch_times[-1]
    ev = trainer.evaluate(state, held, eval_plan)     # not timed
    curve.append((clock, _pooled_acc(ev)))
  return dict(curve=curve, setup_s=t_setup, epoch_s=epoch_times,
              pairs_per_epoch=n_pairs, cache_texts=len(trainer.cache.store)
              if trainer.cache else 0)


def _pooled_acc(ev):
  pairs = np.asarray(ev["pairs"])
  return float(np.sum(np.asarray(ev["accuracy"]) * pairs) / pairs.sum())


# ----------------------------------------------------------------------------
# (b) PyTorch reference design


def run_torch(args, train, held, k, seed, pad_id):
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import BertModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  torch.set_num_threads(max(1, __import__("os").cpu_count()))
  t_start = time.perf_counter()
  model = BertModel.from_pretrained(str(packages.minilm_dir()),
                                    torch_dtype=torch.float32, add_pooling_layer=False)
  head = torch.nn.Linear(model.config.hidden_size, k)
  n_layers = model.config.num_hidden_layers
  for p in model.parameters():
    p.requires_grad = False
  if args.trainable == "top":
    for layer in model.encoder.layer[n_layers - args.top_layers:]:
      for p in layer.parameters():
        p.requires_grad = True
  params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
  opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
  rows = pairs_of(train)
  held_rows = pairs_of(held)

  def pad(seqs):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
      ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
      mask[i, :len(s)] = 1
    return ids, mask

  def reward(seqs, comps):
    ids, mask = pad(seqs)
    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
    return head(pooled).gather(1, torch.as_tensor(comps).view(-1, 1))[:, 0]

  t_setup = time.perf_counter() - t_start
  rng = np.random.default_rng(seed)
  clock, curve, epoch_times = t_setup, [], []
  bs = args.torch_pairs_per_batch
  def evaluate():
    model.eval()
    with torch.no_grad():                              # not timed
      correct = 0
      for lo in range(0, len(held_rows), 64):
        b = held_rows[lo:lo + 64]
        comps = [c for _, _, c in b]
        correct += int((reward([c for c, _, _ in b], comps) >
                        reward([r for _, r, _ in b], comps)).sum())
    model.train()
    return correct / max(len(held_rows), 1)

  n_steps = -(-len(rows) // bs)
  eval_at = {round(n_steps * (i + 1) / args.torch_evals_per_epoch)
             for i in range(args.torch_evals_per_epoch)}
  for _ in range(args.torch_epochs):
    t0 = time.perf_counter()
    epoch_time = 0.0
    model.train()
    order = rng.permutation(len(rows))
    for step, lo in enumerate(range(0, len(order), bs), start=1):
      batch = [rows[i] for i in order[lo:lo + bs]]
      comps = [c for _, _, c in batch]
      r_c = reward([c for c, _, _ in batch], comps)   # one forward for chosen
      r_r = reward([r for _, r, _ in batch], comps)   # and one for rejected
      loss = -torch.nn.functional.logsigmoid(r_c - r_r).mean()
      opt.zero_grad()
      loss.backward()
      opt.step()
      if step in eval_at:
        dt = time.perf_counter() - t0
        epoch_time += dt
        clock += dt
        curve.append((clock, evaluate()))
        t0 = time.perf_counter()
    epoch_times.append(epoch_time + time.perf_counter() - t0)
    clock += time.perf_counter() - t0
  return dict(curve=curve, setup_s=t_setup, epoch_s=epoch_times,
              pairs_per_epoch=len(rows))


# ----------------------------------------------------------------------------


def time_to(curve, target):
  for t, acc in curve:
    if acc >= target:
      return t
  return None


def summarize(runs, target):
  pairs = runs[0]["pairs_per_epoch"]
  n_ep = len(runs[0]["epoch_s"])
  return dict(
      pairs_per_s=statistics.median(pairs * n_ep / (r["setup_s"] + sum(r["epoch_s"]))
                                    for r in runs),
      steady_pairs_per_s=statistics.median(
          pairs * (n_ep - 1) / sum(r["epoch_s"][1:]) for r in runs) if n_ep > 1 else None,
      best_acc=statistics.median(max(a for _, a in r["curve"]) for r in runs),
      seconds_to_target=_median_or_none([time_to(r["curve"], target) for r in runs]),
      setup_s=statistics.median(r["setup_s"] for r in runs),
      epoch_s=statistics.median(statistics.median(r["epoch_s"]) for r in runs),
      curves=[[(round(t, 2), round(a, 4)) for t, a in r["curve"]] for r in runs])


def _median_or_none(xs):
  """Median with 'never reached' as +inf; None when the median is never."""
  m = statistics.median([float("inf") if x is None else x for x in xs])
  return None if m == float("inf") else m


def main():
  args = parse()
  backbone = load_backbone("minilm")
  train_g, held_g, desc = load_groups(args)
  enc = TextEncoder(backbone.tokenizer, desc, args.max_len)
  train, held = encode_groups(train_g, enc, 4), encode_groups(held_g, enc, 4)
  k = len(desc)

  jax_runs = [run_jax(args, backbone, train, held, k, args.seed + i)
              for i in range(args.repeats)]
  out = dict(
      machine=dict(cpus=__import__("os").cpu_count(), jax=jax.__version__,
                   backend=jax.default_backend()),
      settings=dict(vars(args)),
      data=dict(train_groups=len(train), held_groups=len(held),
                train_pairs=sum(g.num_pairs() for g in train),
                held_pairs=sum(g.num_pairs() for g in held),
                text_stats=dict(enc.stats)),
      jax=summarize(jax_runs, args.target))
  if not args.skip_torch:
    import torch  # pylint: disable=import-outside-toplevel
    torch_runs = [run_torch(args, train, held, k, args.seed + i, backbone.pad_id)
                  for i in range(args.repeats)]
    out["torch"] = summarize(torch_runs, args.target)
    out["torch"]["version"] = torch.__version__
    both = min(out["jax"]["best_acc"], out["torch"]["best_acc"])
    target = args.target if both >= args.target else both
    tj = _median_or_none([time_to(r["curve"], target) for r in jax_runs])
    tt = _median_or_none([time_to(r["curve"], target) for r in torch_runs])
    out["comparison"] = dict(
        accuracy_target=target,
        target_is_fallback=target != args.target,
        pairs_per_s_speedup=out["jax"]["pairs_per_s"] / out["torch"]["pairs_per_s"],
        steady_pairs_per_s_speedup=(out["jax"]["steady_pairs_per_s"] /
                                    out["torch"]["steady_pairs_per_s"]
                                    if out["jax"]["steady_pairs_per_s"] else None),
        seconds_to_target=dict(jax=tj, torch=tt),
        time_to_target_speedup=(tt / tj) if tj and tt else None)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
