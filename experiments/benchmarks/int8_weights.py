"""python experiments/benchmarks/int8_weights.py --out=docs/benchmarks/int8_weights.json

Would weight-only int8 speed up decoding on XLA:CPU? A decode step multiplies a
few rows by every weight matrix, so it reads the weights once per token: int8
weights are a quarter of float32's bytes. This measures the product that decides
it, SmolLM2-135M's largest (the tied LM head, 576 x 49152), at decode batch sizes:
float32 weights; bfloat16 weights (float32 sums); int8 weights with a per-column
scale, converted inside the jitted product (to float32, or to bfloat16). Median
of --iters calls after a warm-up, each variant interleaved over --repeats rounds
in one process, the load average around the run.
"""

from __future__ import annotations

import argparse
import os
import statistics

import lrf_bench_util as util

K, N = 576, 49152


def variants():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  w = jax.random.normal(jax.random.PRNGKey(0), (K, N)) * 0.05
  scale = jnp.max(jnp.abs(w), axis=0) / 127
  w8 = jnp.round(w / scale).astype(jnp.int8)
  dims = (((1,), (0,)), ((), ()))
  bf16 = lambda x, w: jax.lax.dot_general(x.astype(jnp.bfloat16), w, dims,
                                          preferred_element_type=jnp.float32)
  return {
      "float32": (jax.jit(lambda x, w: x @ w), (w,), w.nbytes),
      "bfloat16": (jax.jit(bf16), (w.astype(jnp.bfloat16),), w.nbytes // 2),
      "int8_to_float32": (jax.jit(lambda x, w8, s: (x @ w8.astype(jnp.float32)) * s),
                          (w8, scale), w8.nbytes + scale.nbytes),
      "int8_to_bfloat16": (jax.jit(lambda x, w8, s: bf16(x, w8.astype(jnp.bfloat16)) * s),
                           (w8, scale), w8.nbytes + scale.nbytes),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="1,8,32")
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default="")
  args = p.parse_args()
  import jax  # pylint: disable=import-outside-toplevel
  before = util.loadavg()
  table = variants()
  times = {(name, b): [] for name in table for b in map(int, args.batches.split(","))}
  for _ in range(args.repeats):
    for (name, b) in times:
      fn, weights, _ = table[name]
      x = jax.random.normal(jax.random.PRNGKey(b), (b, K))
      times[(name, b)].append(util.median_call_seconds(lambda: fn(x, *weights), args.iters))
  result = {"benchmark": "int8_weights", "product": f"(B, {K}) x ({K}, {N}) "
            "(SmolLM2-135M's LM head)", "jax": jax.__version__, "repeats": args.repeats,
            "iters": args.iters, "cpus": os.cpu_count(), "ms": {}, "weight_gb_per_s": {}}
  for (name, b), ts in times.items():
    med = statistics.median(ts)
    result["ms"].setdefault(name, {})[str(b)] = round(med * 1e3, 2)
    result["weight_gb_per_s"].setdefault(name, {})[str(b)] = round(table[name][2] / med / 1e9, 1)
  result.update(util.load_record(before, util.loadavg()))
  result["quotable"] = not result["loaded"]
  util.emit(result, args.out)


if __name__ == "__main__":
  main()
