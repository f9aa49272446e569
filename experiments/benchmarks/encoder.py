"""Encoder throughput (sentences/s) of all-MiniLM-L6-v2: JAX vs sentence-transformers.

  python experiments/benchmarks/encoder.py
  python experiments/benchmarks/encoder.py --num_sentences=64 --repeats=1

Prints one JSON object. Every sentence is exactly ``seq_len`` tokens
(long texts cut at ``seq_len``), embeddings mean-pooled and L2-normalised on
both sides; median of ``repeats`` timed passes after one warm-up pass.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from timing import median_time  # experiments/benchmarks/timing.py


def _texts(n: int) -> list[str]:
  words = ("wireless headphones kitchen knife garden hose running shoes novel paperback "
           "coffee grinder phone case desk lamp yoga mat backpack water bottle").split()
  rng = np.random.default_rng(0)
  return [" ".join(rng.choice(words, size=200)) for _ in range(n)]




def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_sentences", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no_torch", action="store_true")
  args = parser.parse_args()

  import jax
  from optimas_jax.models import bert, registry
  texts = _texts(args.num_sentences)
  b = registry.load_backbone("minilm")
  assert all(len(r) >= args.seq_len for r in b.tokenizer.encode_batch(texts[:4]))
  run = lambda: bert.encode_sentences(b.module, b.params, b.tokenizer, texts,
                                      batch_size=args.batch_size, max_length=args.seq_len)
  ours = run()
  sec = median_time(run, args.repeats)
  result = {"model": "all-MiniLM-L6-v2 (float32)", "num_sentences": args.num_sentences,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "repeats": args.repeats,
            "statistic": "median",
            "machine": {"cpu_count": os.cpu_count(), "jax": jax.__version__,
                        "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
            "jax": {"seconds": round(sec, 3), "sentences_per_s": round(args.num_sentences / sec, 1)}}
  if not args.no_torch:
    try:
      import torch
      from sentence_transformers import SentenceTransformer
    except ImportError:
      result["torch"] = "not installed (pip install -e .[bench])"
    else:
      from optimas_jax.models import packages
      model = SentenceTransformer(str(packages.minilm_dir()), device="cpu")
      model.max_seq_length = args.seq_len
      enc = lambda: model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True)
      ref = enc()
      sec = median_time(enc, args.repeats)
      result["torch"] = {"seconds": round(sec, 3),
                         "sentences_per_s": round(args.num_sentences / sec, 1)}
      result["machine"].update(torch=torch.__version__, torch_threads=torch.get_num_threads())
      result["jax_over_torch"] = round(result["jax"]["sentences_per_s"]
                                       / result["torch"]["sentences_per_s"], 2)
      result["min_cosine_vs_torch"] = round(float(np.min(np.sum(ours * ref, axis=1))), 6)
  result["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
