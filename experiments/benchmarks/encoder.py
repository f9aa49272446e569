"""Encoder throughput (sentences/s) of all-MiniLM-L6-v2: JAX vs sentence-transformers.

  python experiments/benchmarks/encoder.py --out=docs/benchmarks/encoder_idle.json
  python experiments/benchmarks/encoder.py --num_sentences=64 --rounds=1

Prints one JSON object (and writes it to --out). Every sentence is exactly
``seq_len`` tokens (long texts cut at ``seq_len``), embeddings mean-pooled and
L2-normalised on both sides; median of ``repeats`` timed passes after one
warm-up pass. Each side runs in its own process, ``rounds`` times interleaved
(JAX, PyTorch, JAX, ...), with the load average around each process and the
same thread count on both sides; the result is quotable only without a
loaded run. The embeddings of both sides are compared (minimum cosine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

import lrf_bench_util as util  # experiments/benchmarks: load records, side envs, spreads
from timing import median_time  # experiments/benchmarks/timing.py


def _texts(n: int) -> list[str]:
  words = ("wireless headphones kitchen knife garden hose running shoes novel paperback "
           "coffee grinder phone case desk lamp yoga mat backpack water bottle").split()
  rng = np.random.default_rng(0)
  return [" ".join(rng.choice(words, size=200)) for _ in range(n)]


def side(name: str, args) -> dict:
  """One side's process: sentences/s, and the first embeddings (for the cosine)."""
  texts = _texts(args.num_sentences)
  if name == "jax":
    import jax
    from optimas_jax.models import bert, registry
    from optimas_jax.runtime import configure_process
    host_memory = configure_process()
    b = registry.load_backbone("minilm")
    assert all(len(r) >= args.seq_len for r in b.tokenizer.encode_batch(texts[:4]))
    run = lambda: bert.encode_sentences(b.module, b.params, b.tokenizer, texts,  # noqa: E731
                                        batch_size=args.batch_size, max_length=args.seq_len)
    versions = {"jax": jax.__version__, "host_memory": host_memory}
  else:
    import torch
    from sentence_transformers import SentenceTransformer
    from optimas_jax.models import packages
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    model = SentenceTransformer(str(packages.minilm_dir()), device="cpu")
    model.max_seq_length = args.seq_len
    run = lambda: model.encode(texts, batch_size=args.batch_size,  # noqa: E731
                               normalize_embeddings=True, convert_to_numpy=True)
    versions = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
  embeddings = np.asarray(run())
  sec = median_time(run, args.repeats)
  return {"sentences_per_s": round(args.num_sentences / sec, 1), "versions": versions,
          "embeddings_head": embeddings[:8].tolist()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_sentences", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3, help="timed passes per process")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved processes per side")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--out", default="")
  parser.add_argument("--side", choices=("jax", "torch"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    print("RESULT " + json.dumps(side(args.side, args)))
    return
  sides = ["jax"] + ([] if args.no_torch else ["torch"])
  cache_root = os.path.expanduser("~/.cache/optimas_jax/bench")
  os.makedirs(cache_root, exist_ok=True)
  flags = [f"--num_sentences={args.num_sentences}", f"--batch_size={args.batch_size}",
           f"--seq_len={args.seq_len}", f"--repeats={args.repeats}"]
  peak = util.matmul_peak(args.threads)    # on the same cores, in this run
  runs = util.interleaved_runs(__file__, sides, flags, args.rounds, args.threads, cache_root)
  heads = {name: np.asarray(runs[name][0]["embeddings_head"]) for name in sides}
  for rs in runs.values():
    for r in rs:
      r.pop("embeddings_head", None)
  result = {"benchmark": "encoder", "command": " ".join(["python", *sys.argv]),
            "model": "all-MiniLM-L6-v2 (float32)", "num_sentences": args.num_sentences,
            "batch_size": args.batch_size, "seq_len": args.seq_len,
            "repeats_per_process": args.repeats, "rounds": args.rounds,
            "threads": {s: args.threads for s in sides},
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "cpu": util.cpu()},
            "runs": runs}
  for name in sides:
    result[name] = util.spread([r["sentences_per_s"] for r in runs[name]])
  # all-MiniLM-L6-v2's shape: 6 layers, hidden 384, MLP 1536; forward only.
  flops = util.bert_flops_per_text(384, 1536, 6, args.seq_len, train=False)
  result["matmul_peak"] = peak
  result["share_of_float32_peak"] = {
      "label": f"model FLOPs of one {args.seq_len}-token sentence's forward "
               "(util.bert_flops_per_text) x median sentences/s / the float32 matmul peak "
               "measured in this run",
      **{name: round(flops * result[name]["median"] / 1e9 / peak["float32_gflops"], 3)
         for name in sides}}
  if "torch" in sides:
    result["jax_over_torch_sentences_per_s"] = round(
        result["jax"]["median"] / result["torch"]["median"], 2)
    result["min_cosine_vs_torch"] = round(float(np.min(np.sum(heads["jax"] * heads["torch"],
                                                              axis=1))), 6)
  result["loaded_runs"] = sum(r["loaded"] for rs in runs.values() for r in rs)
  result["quotable"] = result["loaded_runs"] == 0
  util.emit(result, args.out)


if __name__ == "__main__":
  main()
