"""python experiments/benchmarks/sampling_draw.py --out=docs/benchmarks/sampling_draw_idle.json

The token draw of a decode step over SmolLM2's 49,152-token vocabulary, in the
two formulations that give the same tokens: `jax.vmap(jax.random.categorical)`
and `jnp.argmax` (a variadic reduce, into which XLA:CPU fuses the Gumbel noise),
against models/generate.py's `categorical` and `first_argmax` (noise from each
row's key, then a max and a min-index reduction). Checks that both draw the same
tokens, then times each at decode batch sizes: median of --iters calls after a
warm-up, the variants interleaved over --repeats rounds in one process, the load
average around the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import lrf_bench_util as util

VOCAB = 49152


def variants():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from optimas_jax.models import generate  # pylint: disable=import-outside-toplevel
  return {
      "categorical_jax_random": jax.jit(jax.vmap(jax.random.categorical)),
      "categorical_generate": jax.jit(generate.categorical),
      "argmax_jnp": jax.jit(lambda keys, logits: jnp.argmax(logits, axis=-1)),
      "argmax_generate_first_argmax": jax.jit(lambda keys, logits:
                                              generate.first_argmax(logits)),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="1,8,32")
  p.add_argument("--iters", type=int, default=40)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default="")
  args = p.parse_args()
  import jax  # pylint: disable=import-outside-toplevel
  before = util.loadavg()
  table = variants()
  batches = [int(b) for b in args.batches.split(",")]
  inputs = {b: (jax.random.split(jax.random.key(b), b),
                jax.random.normal(jax.random.key(100 + b), (b, VOCAB)) * 3) for b in batches}
  for b, (keys, logits) in inputs.items():
    for pair in (("categorical_jax_random", "categorical_generate"),
                 ("argmax_jnp", "argmax_generate_first_argmax")):
      a, c = (np.asarray(table[name](keys, logits)) for name in pair)
      if not np.array_equal(a, c):
        raise RuntimeError(f"{pair} draw different tokens at batch {b}")
  times = {(name, b): [] for name in table for b in batches}
  for _ in range(args.repeats):
    for (name, b) in times:
      fn, (keys, logits) = table[name], inputs[b]
      jax.block_until_ready(fn(keys, logits))
      runs = []
      for _ in range(args.iters):
        t = time.perf_counter()
        jax.block_until_ready(fn(keys, logits))
        runs.append(time.perf_counter() - t)
      times[(name, b)].append(statistics.median(runs))
  result = {"benchmark": "sampling_draw", "logits": f"(B, {VOCAB}) float32",
            "same_tokens": True, "jax": jax.__version__, "repeats": args.repeats,
            "iters": args.iters, "cpus": os.cpu_count(), "ms": {}}
  for (name, b), ts in times.items():
    result["ms"].setdefault(name, {})[str(b)] = round(statistics.median(ts) * 1e3, 3)
  result.update(util.load_record(before, util.loadavg()))
  result["quotable"] = not result["loaded"]
  util.emit(result, args.out)


if __name__ == "__main__":
  main()
