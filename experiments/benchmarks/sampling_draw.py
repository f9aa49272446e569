"""python experiments/benchmarks/sampling_draw.py --out=docs/benchmarks/sampling_draw_idle.json

The token draw of a decode step over SmolLM2's 49,152-token vocabulary, in the
two formulations that give the same tokens: `jax.vmap(jax.random.categorical)`
and `jnp.argmax` (a variadic reduce, into which XLA:CPU fuses the Gumbel noise),
against models/generate.py's `categorical` and `first_argmax` (noise from each
row's key, then a max and a min-index reduction); and the top-p cut (top_p=0.95)
by a sort and a cumsum against generate.top_p_filter's bisection. Checks that
both draw the same tokens (top-p: counts the rows whose kept sets differ, which
float32 rounding at the cut allows), then times each at decode batch sizes:
median of --iters calls after a warm-up, the variants interleaved over --repeats
rounds in one process, the load average around the run.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

import lrf_bench_util as util

VOCAB = 49152


def top_p_by_sort(logits, top_p):
  """The top-p cut by a full sort and a cumsum (what generate.top_p_filter replaced)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  ranked = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(ranked, axis=-1)
  kept = jnp.where(jnp.cumsum(probs, axis=-1) - probs < top_p, ranked, jnp.inf)
  return jnp.where(logits >= jnp.min(kept, axis=-1, keepdims=True), logits, -jnp.inf)


def variants():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from optimas_jax.models import generate  # pylint: disable=import-outside-toplevel
  return {
      "top_p_0.95_sort": jax.jit(lambda keys, logits: top_p_by_sort(logits, 0.95)),
      "top_p_0.95_generate_bisection": jax.jit(lambda keys, logits:
                                               generate.top_p_filter(logits, 0.95)),
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
  top_p_rows_differing = {}
  for b, (keys, logits) in inputs.items():
    for pair in (("categorical_jax_random", "categorical_generate"),
                 ("argmax_jnp", "argmax_generate_first_argmax")):
      a, c = (np.asarray(table[name](keys, logits)) for name in pair)
      if not np.array_equal(a, c):
        raise RuntimeError(f"{pair} draw different tokens at batch {b}")
    a, c = (np.isfinite(np.asarray(table[name](keys, logits)))
            for name in ("top_p_0.95_sort", "top_p_0.95_generate_bisection"))
    top_p_rows_differing[str(b)] = int((a != c).any(axis=1).sum())
  times = {(name, b): [] for name in table for b in batches}
  for _ in range(args.repeats):
    for (name, b) in times:
      fn, (keys, logits) = table[name], inputs[b]
      times[(name, b)].append(util.median_call_seconds(lambda: fn(keys, logits), args.iters))
  result = {"benchmark": "sampling_draw", "logits": f"(B, {VOCAB}) float32",
            "same_tokens": True, "top_p_rows_differing": top_p_rows_differing,
            "jax": jax.__version__, "repeats": args.repeats,
            "iters": args.iters, "cpus": os.cpu_count(), "ms": {}}
  for (name, b), ts in times.items():
    result["ms"].setdefault(name, {})[str(b)] = round(statistics.median(ts) * 1e3, 3)
  result.update(util.load_record(before, util.loadavg()))
  result["quotable"] = not result["loaded"]
  util.emit(result, args.out)


if __name__ == "__main__":
  main()
