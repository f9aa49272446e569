"""The JAX Generator alone, two checkouts of this project against each other.

Measures what a change to the decoder did, on this machine, with nothing else
different: each side is its own process importing `optimas_jax` from its own
checkout (`--before`, `--after`: folders holding an `optimas_jax/` package, e.g.
`git worktree add /tmp/before <commit>`), interleaved before, after x `--rounds`,
both pinned to the same cores, the load recorded around every process. A process
loads SmolLM2-135M once and, per batch size, times `--calls` generate_ids calls of
`--new_tokens` tokens after `--prompt_len`-token prompts (after one untimed call
that compiles), keeping the fastest.

  python experiments/benchmarks/generator_before_after.py --before=/tmp/before \\
      --after=. --dtype=float32 --batches=1,8,32 --rounds=3 \\
      --out=docs/benchmarks/<name>.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lrf_bench_util  # noqa: E402  pylint: disable=wrong-import-position

SIDES = ("before", "after")


def _commit(path: str) -> str:
  """The checkout's commit (with "+changes" when its tree differs from it)."""
  try:
    head = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("+changes" if dirty else "")


def _child(args) -> None:
  """One side's process: seconds per call, fastest of `--calls`, per batch size."""
  sys.path.insert(0, os.path.abspath(getattr(args, args.side)))
  import optimas_jax  # pylint: disable=import-outside-toplevel
  from optimas_jax.runtime import configure_process  # pylint: disable=import-outside-toplevel
  configure_process()
  from optimas_jax.models import generate, registry  # pylint: disable=import-outside-toplevel
  import decode  # pylint: disable=import-outside-toplevel
  backbone = registry.load_backbone("smollm2-135m", args.dtype)
  batches = [int(b) for b in args.batches.split(",")]
  gen = generate.Generator(backbone.module, backbone.params, backbone.pad_id,
                           max_batch=max(batches), prompt_multiple=64)
  seconds = {}
  for batch in batches:
    # pylint: disable-next=protected-access
    prompts = decode._prompts(backbone.tokenizer, batch, args.prompt_len)
    gen.generate_ids(prompts, max_new_tokens=args.new_tokens)
    calls = []
    for _ in range(args.calls):
      t = time.perf_counter()
      gen.generate_ids(prompts, max_new_tokens=args.new_tokens)
      calls.append(time.perf_counter() - t)
    seconds[str(batch)] = round(min(calls), 4)
  print("RESULT " + json.dumps({"package": os.path.dirname(optimas_jax.__file__),
                                "seconds": seconds}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--before", required=True, help="checkout folder of the 'before' side")
  parser.add_argument("--after", required=True, help="checkout folder of the 'after' side")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--batches", default="1,8,32")
  parser.add_argument("--prompt_len", type=int, default=256)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--calls", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--out", default="")
  parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    _child(args)
    return
  for side in SIDES:      # bad input: said before any model loads
    if not os.path.isdir(os.path.join(getattr(args, side), "optimas_jax")):
      parser.error(f"--{side}={getattr(args, side)}: no optimas_jax/ package there; give a "
                   "checkout folder (git worktree add <folder> <commit>)")
  flags = [f"--before={os.path.abspath(args.before)}", f"--after={os.path.abspath(args.after)}",
           f"--dtype={args.dtype}", f"--batches={args.batches}",
           f"--prompt_len={args.prompt_len}", f"--new_tokens={args.new_tokens}",
           f"--calls={args.calls}"]
  cache_root = tempfile.mkdtemp(prefix="generator-ab-")
  runs = lrf_bench_util.interleaved_runs(os.path.abspath(__file__), SIDES, flags, args.rounds,
                                         args.threads, cache_root)
  summary = {}
  for batch in args.batches.split(","):
    sides = {s: lrf_bench_util.spread([r["seconds"][batch] for r in runs[s]]) for s in SIDES}
    summary[batch] = {**sides, "before_over_after": round(
        sides["before"]["median"] / sides["after"]["median"], 3)}
  loaded = sum(r["loaded"] for s in SIDES for r in runs[s])
  lrf_bench_util.emit({
      "benchmark": "generator_before_after",
      "what": (f"JAX Generator alone (SmolLM2-135M, {args.dtype}, {args.prompt_len}-token "
               f"prompts, {args.new_tokens} new tokens, greedy): seconds per generate_ids "
               f"call, fastest of {args.calls} after one untimed call, per batch size"),
      "before": {"path": os.path.abspath(args.before), "commit": _commit(args.before)},
      "after": {"path": os.path.abspath(args.after), "commit": _commit(args.after)},
      "method": (f"each side its own process, interleaved before, after x {args.rounds}, "
                 f"pinned to the same {args.threads} cores, the host memory setting on; "
                 "the first round's processes fill a fresh compilation cache (not timed: "
                 "each process times calls after its own compile)"),
      "command": "python experiments/benchmarks/generator_before_after.py " + " ".join(
          a for a in sys.argv[1:]),
      "machine": {"cpu_count": os.cpu_count(), "cpu": lrf_bench_util.cpu()},
      "runs": runs, "summary": summary, "loaded_runs": loaded, "quotable": loaded == 0,
  }, args.out)


if __name__ == "__main__":
  main()
