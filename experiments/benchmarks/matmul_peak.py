"""python experiments/benchmarks/matmul_peak.py --out=docs/benchmarks/matmul_peak.json

The machine's matmul peak under JAX (XLA:CPU) and, where the bench extra is
installed, PyTorch: an n x n x n product in float32 and in bfloat16 (float32
accumulation), GFLOP/s of the best of --iters calls after a warm-up. Each
variant runs in its own process, the variants interleaved over --repeats
rounds, with the load average around every run (a run above cores + 0.5 is
marked loaded; a result with a loaded run is not quotable). JAX variants:
XLA:CPU's default and its oneDNN / XNNPACK paths (--xla_cpu_use_onednn,
--xla_cpu_experimental_onednn_custom_call, --xla_cpu_use_xnnpack), to see
whether any of them uses the CPU's native bfloat16 instructions
(avx512_bf16 / AMX where /proc/cpuinfo lists them).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import lrf_bench_util as util

TAG = "MATMUL_RESULT "
JAX_VARIANTS = {"default": "", "onednn": "--xla_cpu_use_onednn=true",
                "onednn_custom_call": "--xla_cpu_experimental_onednn_custom_call=true",
                "xnnpack": "--xla_cpu_use_xnnpack=true"}


def child(framework: str, n: int, iters: int) -> dict:
  out = {}
  if framework == "jax":
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    for dt in (jnp.float32, jnp.bfloat16):
      a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dt)
      b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), dt)
      f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
      f(a, b).block_until_ready()
      best = min(_time(lambda: f(a, b).block_until_ready()) for _ in range(iters))
      out[jnp.dtype(dt).name] = 2 * n ** 3 / best / 1e9
  else:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    for dt in (torch.float32, torch.bfloat16):
      a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
      torch.mm(a, b)
      best = min(_time(lambda: torch.mm(a, b)) for _ in range(iters))
      out[str(dt).split(".")[-1]] = 2 * n ** 3 / best / 1e9
  return out


def _time(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=2048)
  p.add_argument("--iters", type=int, default=5)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--variants", default=",".join(list(JAX_VARIANTS) + ["torch"]))
  p.add_argument("--out", default="")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(TAG + json.dumps(child(args.child, args.n, args.iters)), flush=True)
    return
  runs: dict[str, list] = {v: [] for v in args.variants.split(",")}
  for _ in range(args.repeats):                      # interleaved rounds
    for variant in runs:
      env = dict(os.environ)
      framework = "torch" if variant == "torch" else "jax"
      if framework == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + JAX_VARIANTS[variant]).strip()
      before = util.loadavg()
      proc, usage = util.run_side_process(
          [sys.executable, __file__, f"--child={framework}", f"--n={args.n}",
           f"--iters={args.iters}"], os.cpu_count() or 1, env, capture_output=True, text=True)
      lines = [l for l in proc.stdout.splitlines() if l.startswith(TAG)]
      record = {**util.load_record(before, util.loadavg()), **usage}
      record.update(json.loads(lines[-1][len(TAG):]) if lines else
                    {"error": proc.stderr[-500:] or f"exit {proc.returncode}"})
      runs[variant].append(record)
  out = {"benchmark": "matmul_peak", "n": args.n, "iters": args.iters,
         "command": " ".join(["python", "experiments/benchmarks/matmul_peak.py"] + sys.argv[1:]),
         "cpu_flags": sorted(set(open("/proc/cpuinfo").read().split()) &
                             {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2"}),
         "cpu": util.cpu(), "cpus": os.cpu_count(), "runs": runs,
         "gflops_median": {v: {dt: statistics.median(r[dt] for r in rs if dt in r)
                               for dt in ("float32", "bfloat16") if any(dt in r for r in rs)}
                           for v, rs in runs.items()},
         "quotable": not any(r["loaded"] for rs in runs.values() for r in rs)}
  text = json.dumps(out, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
