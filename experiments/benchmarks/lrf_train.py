"""python experiments/benchmarks/lrf_train.py --out=docs/benchmarks/lrf_train.json

(smoke: add --quick, about 3 minutes; the full run took 15.7 minutes on
the 2-core CPU at load average ~3.5, docs/benchmarks/lrf_train.json)

Like-for-like LRF training benchmark, this project (JAX) against PyTorch,
on the same Amazon preference groups from ../shared/data (sessions x 4
candidate items, ground-truth item scores 1), the same held-out groups, the
same token ids (template + middle truncation at 128 tokens), the same step
plan (groups per step, order, epochs), the same AdamW + warmup-cosine
schedule, gradient clipping and weight decay. Two comparisons, each with
its own JSON keys:

- full_finetune_*: each side as designed, both training the whole MiniLM
  (embeddings, all layers, head). Ours: grouped Bradley-Terry, every
  candidate encoded once per step (a group of 4 gives 3 pairs from 4
  encodes), no activation cache. Reference design (snap-stanford/optimas
  trains its reward model with HF): flat (chosen, rejected) pairs, one
  forward for the chosen texts and one for the rejected texts (3 pairs ->
  6 encodes), pairwise BT loss, dynamic padding.
- same_algorithm_*: the same algorithm in both frameworks: grouped BT, the
  frozen embeddings + lower 5 layers run once per text into a cache, only
  the top layer + head trained. The ratio is the framework's share.

Each side runs in its own process (this script with --side=jax|torch);
held-out pairwise accuracy is evaluated every --eval_every steps, with the
eval time left out of every clock. Prints one JSON object and writes it to
--out. Needs ../shared/data and the bench extra (make bench-setup).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import lrf_bench_util as util

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULT_TAG = "LRF_BENCH_RESULT "
COMPARISONS = ("full_finetune", "same_algorithm")
SIDES = ("jax", "torch", "jax_mixed", "torch_mixed")
STEP_HOLDS = dict(
    full_finetune=dict(
        jax="groups_per_batch groups x 4 candidates: one forward+backward of "
            "the whole MiniLM over 4 texts per group; BT over the group's "
            "3 (chosen, rejected) pairs",
        torch="the same groups' pairs as a flat list: 3 pairs per group, one "
              "forward+backward over the chosen texts and one over the "
              "rejected texts (2 texts per pair, 6 per group)"),
    same_algorithm=dict(
        jax="groups_per_batch groups x 4 candidates: cached layer-5 hidden "
            "states -> top layer + mean pool + head, BT over the group's pairs",
        torch="identical to the JAX side (same cache, same bucketed padding, "
              "same pairs)"))


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
  p.add_argument("--out", default=None,
                 help="combined JSON (default docs/benchmarks/lrf_train.json, "
                      "none with --quick); '' to only print")
  p.add_argument("--quick", action="store_true",
                 help="smoke run: 8 train / 4 held-out groups, 1 epoch each")
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                 help="cores of each side (CPU affinity, and torch.set_num_threads); 1 is "
                      "the one-thread control")
  p.add_argument("--compilation_cache", default="warm", choices=("cold", "warm", "off"),
                 help="JAX side: a fresh empty persistent cache per run (cold), one kept "
                      "across runs and filled by a first, untimed run whose set-up is "
                      "reported as cold_setup_s (warm), or none")
  p.add_argument("--repeats", type=int, default=3,
                 help="runs per side; medians are reported")
  p.add_argument("--comparisons", default=",".join(COMPARISONS))
  p.add_argument("--sides", default="jax,torch",
                 help=f"any of {SIDES}; jax_mixed: the JAX trainer in mixed precision "
                      "(config.lrf.compute_dtype=bfloat16), reported beside float32; "
                      "torch_mixed: PyTorch under torch.autocast(cpu, bfloat16)")
  p.add_argument("--max_len", type=int, default=128)
  p.add_argument("--train_groups", type=int, default=0, help="0: all (96)")
  p.add_argument("--held_groups", type=int, default=0, help="0: all (24)")
  p.add_argument("--groups_per_batch", type=int, default=4)
  p.add_argument("--warmup_frac", type=float, default=0.1)
  p.add_argument("--ff_epochs", type=int, default=1)
  p.add_argument("--ff_lr", type=float, default=1e-4)
  p.add_argument("--sa_epochs", type=int, default=3)
  p.add_argument("--sa_lr", type=float, default=1e-3)
  p.add_argument("--eval_every", type=int, default=6, help="steps between evals")
  p.add_argument("--target", type=float, default=0.80)
  p.add_argument("--seed", type=int, default=0)
  # Internal: one side of one comparison, in its own process.
  p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
  p.add_argument("--spec", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.train_groups = args.train_groups or 8
    args.held_groups = args.held_groups or 4
    args.ff_epochs = args.sa_epochs = 1
    args.eval_every = 1
  if args.out is None:
    args.out = "" if args.quick else str(ROOT / "docs" / "benchmarks" / "lrf_train.json")
  return args


# ----------------------------------------------------------------------------
# data (parent and JAX child; the PyTorch child reads token ids from the spec)


def encoded_data(data_root, max_len, train_groups, held_groups, backbone=None):
  """(train, held, description, text stats, backbone): encoded Amazon groups."""
  from optimas_jax.lrf import datasets  # pylint: disable=import-outside-toplevel
  from optimas_jax.lrf.data import encode_groups  # pylint: disable=import-outside-toplevel
  from optimas_jax.lrf.text import TextEncoder  # pylint: disable=import-outside-toplevel
  from optimas_jax.models.registry import load_backbone  # pylint: disable=import-outside-toplevel
  backbone = backbone or load_backbone("minilm")
  train, held = datasets.amazon_groups(data_root, 0)
  train = train[:train_groups] if train_groups else train
  held = held[:held_groups] if held_groups else held
  desc = datasets.DESCRIPTIONS["amazon"]
  enc = TextEncoder(backbone.tokenizer, [desc], max_len)
  return (encode_groups(train, enc, 4), encode_groups(held, enc, 4), desc,
          dict(enc.stats), backbone)


def fingerprint(groups) -> str:
  h = hashlib.blake2b(digest_size=8)
  for g in groups:
    h.update(bytes([g.component]))
    for ids in g.ids:
      h.update(bytes(ids.astype("<i4")))
    h.update(bytes(g.scores.astype("<f4")))
  return h.hexdigest()


def as_json_groups(groups):
  return [dict(component=int(g.component), ids=[i.tolist() for i in g.ids],
               scores=[float(x) for x in g.scores], keys=[k.hex() for k in g.keys])
          for g in groups]


def make_spec(args, comparison, seed, train, held, backbone):
  from optimas_jax.lrf.buckets import plan_epoch  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from optimas_jax.models import packages  # pylint: disable=import-outside-toplevel
  full = comparison == "full_finetune"
  buckets = (64, args.max_len)
  epochs = args.ff_epochs if full else args.sa_epochs
  plans = [[[int(length), [int(i) for i in idxs]] for length, idxs in
            plan_epoch(train, buckets, args.groups_per_batch, seed, e)]
           for e in range(epochs)]
  total = sum(len(p) for p in plans)
  settings = dict(
      comparison=comparison, trainable="full" if full else "top",
      top_layers=0 if full else 1, activation_cache=not full,
      lr=args.ff_lr if full else args.sa_lr, epochs=epochs,
      schedule="AdamW, linear warmup then cosine to 0.1 x lr "
               "(optax.warmup_cosine_decay_schedule), per step",
      warmup_steps=max(1, round(args.warmup_frac * total)), total_steps=total,
      weight_decay=0.01, decay="matrices only", clip_norm=1.0, b1=0.9, b2=0.999,
      groups_per_batch=args.groups_per_batch, max_candidates=4,
      buckets=list(buckets), max_len=args.max_len, eval_every=args.eval_every,
      target=args.target, seed=seed, dropout=0.0)
  # One head init for both sides (flax Dense's lecun-normal kernel, zero
  # bias), so both start from the same weights and see the same batches.
  hidden = int(backbone.hidden_size)
  rng = np.random.default_rng(seed)
  head = np.clip(rng.standard_normal((1, hidden)), -2, 2) * hidden ** -0.5
  return dict(settings=settings, plans=plans, minilm_dir=str(packages.minilm_dir()),
              head_init=dict(weight=head.tolist(), bias=[0.0]),
              pad_id=int(backbone.pad_id), num_components=1,
              data=dict(root=args.data, max_len=args.max_len,
                        train_groups=args.train_groups, held_groups=args.held_groups,
                        fingerprint=fingerprint(train) + fingerprint(held)),
              train=as_json_groups(train), held=as_json_groups(held))


# ----------------------------------------------------------------------------
# JAX side (this project's trainer), in its own process


def run_jax(spec: dict, compute_dtype: str = "") -> dict:
  """This project's trainer on the spec; `compute_dtype` "bfloat16": mixed precision
  (bfloat16 products summed in float32 over float32 parameters, config.lrf.compute_dtype)."""
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  from optimas_jax.lrf.buckets import plan_epoch
  from optimas_jax.lrf.config import default_lrf_config
  from optimas_jax.lrf.model import build_lrf
  from optimas_jax.lrf.train import Trainer
  from optimas_jax.models.registry import load_backbone
  from optimas_jax.runtime import configure_process
  # pylint: enable=import-outside-toplevel
  host_memory = configure_process()     # $OPTIMAS_JAX_COMPILATION_CACHE: cold, warm or off
  s, d = spec["settings"], spec["data"]
  clock = util.Clock()
  load_start = util.loadavg()
  steps = [(length, idxs) for epoch in spec["plans"] for length, idxs in epoch]
  rec = util.Recorder(clock, s["eval_every"], len(steps))
  backbone = load_backbone("minilm")
  rec.part("load_model")
  with clock.paused():      # tokenization: done by the parent for PyTorch
    train, held, _, _, _ = encoded_data(d["root"], d["max_len"], d["train_groups"],
                                        d["held_groups"], backbone)
    if fingerprint(train) + fingerprint(held) != d["fingerprint"]:
      raise RuntimeError("JAX child encoded different token ids than the parent")

  cfg = default_lrf_config()
  cfg.trainable, cfg.top_layers = s["trainable"], max(s["top_layers"], 1)
  cfg.cache_frozen = s["activation_cache"]
  cfg.max_len, cfg.buckets = s["max_len"], tuple(s["buckets"])
  cfg.optim.lr, cfg.optim.warmup_steps = s["lr"], s["warmup_steps"]
  cfg.optim.schedule, cfg.optim.weight_decay = "cosine", s["weight_decay"]
  cfg.optim.clip_norm, cfg.optim.b1, cfg.optim.b2 = s["clip_norm"], s["b1"], s["b2"]
  cfg.groups_per_batch, cfg.max_candidates = s["groups_per_batch"], s["max_candidates"]
  cfg.accum_steps = 1
  cfg.compute_dtype = compute_dtype
  lrf = build_lrf(backbone, spec["num_components"], cfg)
  trainer = Trainer(lrf, cfg, spec["num_components"], len(steps))
  rng = jax.random.PRNGKey(s["seed"])
  state = trainer.init_state(rng, backbone.params)
  state = state.replace(trainable=_set_head(state.trainable, spec["head_init"]))
  jax.block_until_ready(state)
  rec.part("init")
  if s["activation_cache"]:
    trainer.prepare(train, state.frozen)     # frozen-prefix cache fill (timed)
    rec.part("cache_fill")
    with clock.paused():                     # held-out features: untimed
      trainer.prepare(held, state.frozen)
  # Every step shape's program ready before the clock runs (read or traced,
  # compiled or loaded from the cache), without running a step.
  warm = set()
  for length, idxs in steps:
    if length not in warm:
      trainer.precompile(state, trainer.batch(train, idxs, length), rng)
      warm.add(length)
  rec.part("compile")
  rec.setup_parts["step_shapes"] = len(warm)
  eval_plan = plan_epoch(held, cfg.buckets, cfg.groups_per_batch, s["seed"], 0,
                         shuffle=False)

  def evaluate():
    ev = trainer.evaluate(state, held, eval_plan)
    pairs = np.asarray(ev["pairs"])
    return float(np.sum(np.asarray(ev["accuracy"]) * pairs) / max(pairs.sum(), 1))

  gc.collect()
  peak_setup = util.reset_peak_rss()
  rec.start_training()
  with clock.paused():
    acc = evaluate()
  rec.point(acc)
  for length, idxs in steps:
    t0 = clock.now()
    state, metrics = trainer.step_fn(state, trainer.batch(train, idxs, length), rng)
    jax.block_until_ready(metrics["loss"])
    rec.step_done(sum(train[i].num_pairs() for i in idxs), clock.now() - t0)
    if rec.due():
      with clock.paused():
        acc = evaluate()
      rec.point(acc)
  out = rec.result(s["target"])
  out.update(framework=f"jax {jax.__version__} ({jax.default_backend()}, "
             f"{jax.device_count()} device)",
             activation_cache_texts=len(getattr(getattr(trainer, "cache", None),
                                                "store", ())),
             peak_rss_mb=round(max(peak_setup, util.peak_rss_mb()), 1),
             peak_rss_train_mb=util.peak_rss_since_reset_mb(),
             loadavg_start=load_start, loadavg_end=util.loadavg(), host_memory=host_memory)
  return out


def _set_head(trainable, head_init):
  """The spec's head weights into the vmapped heads' kernel (K, H, 1) and bias."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = dict(kernel=np.asarray(head_init["weight"], np.float32),
                bias=np.asarray(head_init["bias"], np.float32))
  done = []

  def put(path, x):
    names = [getattr(p, "key", None) for p in path]
    if "heads" in names and names[-1] in values:
      done.append(names[-1])
      return jax.device_put(values[names[-1]].reshape(x.shape).astype(x.dtype),
                            x.sharding)
    return x
  out = jax.tree_util.tree_map_with_path(put, trainable)
  if sorted(done) != ["bias", "kernel"]:
    raise RuntimeError(f"head init: expected one heads kernel and bias, set {done}")
  return out


# ----------------------------------------------------------------------------
# parent: specs, one process per side, medians, ratios


def run_side(side: str, spec_path: str, threads: int, env: dict) -> dict:
  t = time.perf_counter()
  before = util.loadavg()
  proc, usage = util.run_side_process([sys.executable, __file__, f"--side={side}",
                                       f"--spec={spec_path}"], threads, env,
                                      stdout=subprocess.PIPE, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
  if proc.returncode or not lines:
    raise RuntimeError(f"{side} side failed (exit {proc.returncode}); "
                       f"stdout tail: {proc.stdout[-2000:]}")
  out = json.loads(lines[-1][len(RESULT_TAG):])
  out["process_wall_s"] = round(time.perf_counter() - t, 1)
  out.update(usage)
  out.update(util.load_record(before, util.loadavg()))
  return out


def _median(xs):
  """Median with None ('never reached') as +inf; None when the median is."""
  m = statistics.median(float("inf") if x is None else x for x in xs)
  return None if m == float("inf") else m


def summarize(runs: list[dict]) -> dict:
  keys = ("pairs_per_s", "pairs_per_s_with_setup", "setup_s", "train_s",
          "step_s_median", "best_accuracy", "final_accuracy", "peak_rss_mb",
          "process_wall_s", "cores_busy", "train_loop_cores_busy")
  out = {k: statistics.median(r[k] for r in runs) for k in keys}
  out["seconds_to_target"] = _median([r["seconds_to_target"] for r in runs])
  out["train_seconds_to_target"] = _median([r["train_seconds_to_target"] for r in runs])
  out["never_reached"] = out["seconds_to_target"] is None
  out["pairs_trained"] = runs[0]["pairs_trained"]
  out["framework"] = runs[0]["framework"]
  for k in ("pairs_per_s", "setup_s", "seconds_to_target"):
    out[f"{k}_spread"] = util.spread([r[k] for r in runs])
  out["loaded_runs"] = sum(r["loaded"] for r in runs)
  out["runs"] = runs
  return out


def peak_shares(comparison: str, block: dict, train, backbone, max_len: int,
                peak: dict) -> dict:
  """Each side's training step as model GFLOP/s and as a share of the float32 matmul peak
  measured in the same run. Model FLOPs: every text at max_len tokens (the benchmark's
  Amazon texts all are, after truncation), forward + backward = 3 x forward; the full
  fine-tune encodes all layers, the same algorithm the top layer only."""
  cfg = backbone.module.config
  grouped = sum(len(g.ids) for g in train) / sum(g.num_pairs() for g in train)
  layers = cfg.num_layers if comparison == "full_finetune" else 1
  per_text = util.bert_flops_per_text(cfg.hidden_size, cfg.intermediate_size, layers,
                                      max_len)
  texts_per_pair = {side: grouped for side in SIDES}
  if comparison == "full_finetune":
    texts_per_pair["torch"] = texts_per_pair["torch_mixed"] = 2.0   # one forward per text
  out = {"label": "model GFLOP/s of the training step (texts encoded per pair x FLOPs "
                  "per text x median pairs/s) / the float32 matmul peak measured in "
                  "this run", "flops_per_text": per_text}
  for side in (s for s in SIDES if s in block):
    gflops = texts_per_pair[side] * per_text * block[side]["pairs_per_s"] / 1e9
    out[side] = {"texts_per_pair": round(texts_per_pair[side], 3),
                 "gflops_per_s": round(gflops, 1),
                 "share": round(gflops / peak["float32_gflops"], 3)}
  return out


def mixed_precision_record(f32: dict, mixed: dict, torch: dict | None, target_key: str):
  """Mixed precision beside float32 in the same framework (the like-for-like ratio:
  same work, data, trainable set, steps and threads; only the products' precision
  differs) and the held-out accuracy it reaches, seed by seed."""
  out = dict(
      label="JAX mixed precision (bfloat16 products summed in float32, float32 "
            "parameters and Adam) / JAX float32, same runs' seeds",
      pairs_per_s=_ratio(mixed["pairs_per_s"], f32["pairs_per_s"]),
      time_to_target=_ratio(f32["seconds_to_target"], mixed["seconds_to_target"]),
      best_accuracy=dict(float32=[r["best_accuracy"] for r in f32["runs"]],
                         mixed=[r["best_accuracy"] for r in mixed["runs"]]),
      # Largest held-out accuracy gap at any evaluation, per seed (same eval points).
      max_accuracy_gap_per_seed=[
          round(max(abs(a["accuracy"] - b["accuracy"])
                    for a, b in zip(fr["curve"], mr["curve"])), 4)
          for fr, mr in zip(f32["runs"], mixed["runs"])])
  if torch is not None:
    out["over_pytorch_float32"] = dict(
        label="JAX mixed precision / PyTorch float32: different precisions, not the "
              "framework ratio",
        pairs_per_s=_ratio(mixed["pairs_per_s"], torch["pairs_per_s"]),
        **{f"time_to_{target_key}": _ratio(torch["seconds_to_target"],
                                           mixed["seconds_to_target"])})
  return out


def _ratio(num, den):
  return round(num / den, 3) if num and den else None


def main():
  args = parse()
  if args.side:
    spec = json.loads(pathlib.Path(args.spec).read_text())
    if args.side in ("jax", "jax_mixed"):
      out = run_jax(spec, "bfloat16" if args.side == "jax_mixed" else "")
    else:
      import lrf_train_torch  # pylint: disable=import-outside-toplevel
      out = lrf_train_torch.run(spec, mixed=args.side == "torch_mixed")
    print(RESULT_TAG + json.dumps(out), flush=True)
    return

  csv = pathlib.Path(args.data) / "amazon" / "session_based_next_item_selection_dataset.csv"
  if not csv.exists():
    sys.exit(f"lrf_train.py: {csv} not found. This benchmark needs the task data "
             f"in ../shared/data (see its README); pass --data=DIR to point elsewhere.")
  t_all = time.perf_counter()
  train, held, _, text_stats, backbone = encoded_data(
      args.data, args.max_len, args.train_groups, args.held_groups)
  target_key = f"{args.target:.2f}"
  out = dict(
      benchmark="lrf_train",
      command=" ".join(["python", "experiments/benchmarks/lrf_train.py"] + sys.argv[1:]),
      quick=args.quick, repeats=args.repeats,
      aggregate=f"median (and range) over {args.repeats} run(s) per side; each side in "
                "its own process, interleaved (A B A B ...); the load average before and "
                "after every run; a run above cores + 0.5 is marked loaded, and a result "
                "with any loaded run is not quotable",
      clocks=("setup_s: model load + init + cache fill + compile (JAX: each step "
              "shape's program made ready ahead of the first step, Trainer.precompile: "
              "traced or read, compiled or loaded; no step is run); "
              "train_s: training steps only; every held-out evaluation (and the "
              "held-out cache fill) is left out of both; seconds_to_target "
              "counts setup + training up to the first eval at >= target"),
      machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                   platform=platform.platform(), cpu=util.cpu(),
                   loadavg_start=util.loadavg(),
                   # glibc malloc settings every side's process inherits (host_memory.py)
                   malloc_env={k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}),
      data=dict(task="amazon next-item (../shared/data/amazon), one component",
                train_groups=len(train), held_groups=len(held),
                candidates_per_group=4,
                train_pairs=sum(g.num_pairs() for g in train),
                held_pairs=sum(g.num_pairs() for g in held),
                max_len=args.max_len, text_stats=text_stats,
                metric="held-out pairwise accuracy over the held-out groups' "
                       "pairs; ties count as wrong"))
  out["matmul_peak"] = util.matmul_peak(args.threads)     # on the same cores, in this run
  with tempfile.TemporaryDirectory() as tmp:
    for comparison in args.comparisons.split(","):
      if comparison not in COMPARISONS:
        sys.exit(f"--comparisons: unknown {comparison!r}; use {COMPARISONS}")
      runs = {side: [] for side in args.sides.split(",")}
      if set(runs) - set(SIDES):
        sys.exit(f"--sides: unknown {sorted(set(runs) - set(SIDES))}; use {SIDES}")
      first_runs = {}
      fill = [side for side in runs if side.startswith("jax")]
      for side in fill if args.compilation_cache == "warm" else []:
        # The kept cache starts empty: a first run of each JAX side fills it (its
        # set-up is the cold one, reported apart), so every timed run below is warm.
        spec = make_spec(args, comparison, args.seed, train, held, backbone)
        path = pathlib.Path(tmp) / f"{comparison}_fill.json"
        path.write_text(json.dumps(spec))
        print(f"[lrf_train] {comparison} {side} (fills the compilation cache) ...",
              file=sys.stderr, flush=True)
        first_runs[side] = run_side(side, str(path), args.threads,
                                    util.side_env(args.threads, args.compilation_cache, tmp))
      for r in range(args.repeats):         # interleaved: A B A B A B
        spec = make_spec(args, comparison, args.seed + r, train, held, backbone)
        path = pathlib.Path(tmp) / f"{comparison}_{r}.json"
        path.write_text(json.dumps(spec))
        for side in runs:
          print(f"[lrf_train] {comparison} repeat {r} {side} ...", file=sys.stderr,
                flush=True)
          env = util.side_env(args.threads, args.compilation_cache, tmp)
          runs[side].append(run_side(side, str(path), args.threads, env))
      block = dict(settings=spec["settings"], step_holds=STEP_HOLDS[comparison])
      block.update({side: summarize(rs) for side, rs in runs.items()})
      for side, first_run in first_runs.items():
        block[side]["cold_setup_s"] = first_run["setup_s"]
        block[side]["cold_first_run"] = first_run
      out[comparison] = block
      block["share_of_float32_peak"] = peak_shares(comparison, block, train, backbone,
                                                   args.max_len, out["matmul_peak"])
      if "jax" in block and "jax_mixed" in block:
        out[f"{comparison}_mixed_precision"] = mixed_precision_record(
            block["jax"], block["jax_mixed"], block.get("torch"), target_key)
      if "jax_mixed" in block and "torch_mixed" in block:
        j, t = block["jax_mixed"], block["torch_mixed"]
        out[f"{comparison}_mixed_vs_mixed"] = dict(
            label="JAX mixed precision (config.lrf.compute_dtype=bfloat16) / PyTorch "
                  "torch.autocast(cpu, bfloat16): both bfloat16 products over float32 "
                  "parameters and AdamW, pooling and head in float32; the frameworks' "
                  "mixes differ inside the layer (autocast keeps bfloat16 activations "
                  "between its ops)",
            pairs_per_s=_ratio(j["pairs_per_s"], t["pairs_per_s"]),
            **{f"time_to_{target_key}": _ratio(t["seconds_to_target"],
                                               j["seconds_to_target"])},
            paired_time_ratios=[_ratio(tr["seconds_to_target"], jr["seconds_to_target"])
                                for jr, tr in zip(j["runs"], t["runs"])],
            best_accuracy=dict(jax_mixed=[r["best_accuracy"] for r in j["runs"]],
                               torch_mixed=[r["best_accuracy"] for r in t["runs"]]))
      if "jax" in block and "torch" in block:
        j, t = block["jax"], block["torch"]
        out[f"{comparison}_speedup_pairs_per_s"] = _ratio(j["pairs_per_s"], t["pairs_per_s"])
        out[f"{comparison}_speedup_pairs_per_s_with_setup"] = _ratio(
            j["pairs_per_s_with_setup"], t["pairs_per_s_with_setup"])
        out[f"{comparison}_speedup_time_to_{target_key}"] = _ratio(
            t["seconds_to_target"], j["seconds_to_target"])
        out[f"{comparison}_speedup_train_time_to_{target_key}"] = _ratio(
            t["train_seconds_to_target"], j["train_seconds_to_target"])
        # Repeat r of both sides ran seed + r: the per-seed ratios, paired.
        out[f"{comparison}_paired_time_to_{target_key}_ratios"] = [
            _ratio(tr["seconds_to_target"], jr["seconds_to_target"])
            for jr, tr in zip(j["runs"], t["runs"])]
        out[f"{comparison}_never_reached_{target_key}"] = dict(
            jax=j["never_reached"], torch=t["never_reached"])
        if comparison == "full_finetune":   # the target: >= 1.5x
          out["full_finetune_meets_1.5x"] = {
              k: (out[f"full_finetune_speedup_{k}"] or 0) >= 1.5
              for k in ("pairs_per_s", f"time_to_{target_key}")}
  out["machine"]["loadavg_end"] = util.loadavg()
  out["threads"] = {
      "cores_allowed": util.allowed_cores(args.threads),
      "jax": "XLA:CPU's own pools, sized by the cores the process may run on (affinity)",
      "torch": f"torch.set_num_threads({args.threads}), on the same cores",
      "measured": "each run's cores_busy: its CPU seconds / wall seconds"}
  out["compilation_cache"] = args.compilation_cache
  out["compilation_cache_note"] = dict(
      warm="one cache kept across the JAX runs, filled by a first run per comparison "
           "(jax.cold_setup_s, jax.cold_first_run; not in the medians): every timed "
           "JAX run is warm",
      cold="a fresh empty cache for every JAX run: every timed run is cold",
      off="no persistent cache")[args.compilation_cache]
  loaded = sum(out[c][side]["loaded_runs"] for c in args.comparisons.split(",")
               for side in args.sides.split(",") if c in out and side in out[c])
  out["quotable"] = loaded == 0                # a loaded run is never quoted
  out["wall_s"] = round(time.perf_counter() - t_all, 1)
  text = json.dumps(out, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
