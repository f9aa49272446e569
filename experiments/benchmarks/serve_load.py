"""The server under staggered arrivals: continuous batching vs the batch window.

  python experiments/benchmarks/serve_load.py --out=docs/benchmarks/serve_load.json
  (smoke: --requests=6 --rounds=1 --model=tiny-llama)

Like for like: the same OpenAI chat requests (greedy, so both schedulers
generate the same tokens; the JSON checks the totals match), arriving on
the same schedule (exponential gaps, --rate per second, from --seed), with
a mix of max_tokens (--max_tokens), to one server over SmolLM2-135M-Instruct
(float32, CPU) run with --scheduler=continuous or --scheduler=window (20 ms
window, up to 32 requests per decode). Each scheduler runs in its own
process, --rounds times interleaved, with the load average before and after
each; the schedule is played untimed until a pass needs no new compiled
program (at most --warm_passes times; which shapes a pass needs depends on
its timing) and then timed, counting the programs the timed pass still
compiled or loaded and their seconds. Reported: per-request latency (arrival to answer; median, p90,
mean), makespan (first arrival to last answer) and completion tokens/s over
the makespan.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request

import numpy as np

import lrf_bench_util as util  # experiments/benchmarks: load records, side envs, spreads

SIDES = ("continuous", "window")
TOPICS = ("rivers of Europe", "the water cycle", "prime numbers", "photosynthesis",
          "the Roman empire", "volcanoes", "sorting algorithms", "the moon")


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="")
  p.add_argument("--model", default="smollm2-135m-instruct")
  p.add_argument("--requests", type=int, default=32)
  p.add_argument("--rate", type=float, default=2.0, help="mean arrivals per second")
  p.add_argument("--max_tokens", default="16,32,64,128", help="drawn per request")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--warm_passes", type=int, default=6,
                 help="untimed plays before the timed one, at most (until one compiles nothing)")
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
  return p.parse_args(argv)


def workload(args) -> list[dict]:
  """[{at (s after the start), body}]: the same requests and arrival times on both sides."""
  rng = np.random.default_rng(args.seed)
  limits = [int(x) for x in args.max_tokens.split(",")]
  at = np.cumsum(rng.exponential(1.0 / args.rate, args.requests))
  at -= at[0]
  out = []
  for i in range(args.requests):
    topic = TOPICS[int(rng.integers(len(TOPICS)))]
    out.append(dict(at=float(at[i]), body={
        "model": args.model, "temperature": 0.0,
        "max_tokens": limits[int(rng.integers(len(limits)))],
        "messages": [{"role": "user", "content": f"Question {i}: explain {topic} briefly."}]}))
  return out


def _post(url: str, body: dict) -> dict:
  req = urllib.request.Request(url, json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
  opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
  with opener.open(req, timeout=600) as resp:
    return json.loads(resp.read())


def play(url: str, requests: list[dict]) -> dict:
  """Sends each request at its time; latencies, makespan, tokens."""
  start = time.perf_counter() + 0.05
  lat, tokens, finished = [0.0] * len(requests), [0] * len(requests), [0.0] * len(requests)

  def one(i):
    r = requests[i]
    time.sleep(max(0.0, start + r["at"] - time.perf_counter()))
    sent = time.perf_counter()
    reply = _post(url + "/chat/completions", r["body"])
    finished[i] = time.perf_counter()
    lat[i], tokens[i] = finished[i] - sent, reply["usage"]["completion_tokens"]

  with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
    list(pool.map(one, range(len(requests))))
  makespan = max(finished) - start
  return dict(latency_median_s=round(statistics.median(lat), 3),
              latency_p90_s=round(float(np.percentile(lat, 90)), 3),
              latency_mean_s=round(statistics.mean(lat), 3),
              makespan_s=round(makespan, 3), completion_tokens=sum(tokens),
              tokens_per_s=round(sum(tokens) / makespan, 2))


def run_side(args) -> dict:
  # pylint: disable=import-outside-toplevel
  from optimas_jax.llm import serve
  from optimas_jax.runtime import configure_process
  # pylint: enable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  host_memory = configure_process()
  compiles = []                          # (name, seconds) of every program compiled or loaded

  def on_event(event, seconds, fun_name="?", **_):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append((fun_name, round(seconds, 3)))

  jax.monitoring.register_event_duration_secs_listener(on_event)
  t0 = time.perf_counter()
  server = serve.make_server(args.model, port=0, scheduler=args.side, batch_window_ms=20.0,
                             max_batch=32).start()
  setup = time.perf_counter() - t0
  warm = []
  try:
    requests = workload(args)
    # Untimed passes compile the shapes the schedule needs (which ones depends on timing):
    # until a pass needs no new program (at most --warm_passes); the timed pass reports
    # the programs it still had to get.
    for _ in range(args.warm_passes):
      del compiles[:]
      warm.append(dict(play(server.url, requests), programs_compiled_or_loaded=len(compiles)))
      if not compiles:
        break
    del compiles[:]
    timed = play(server.url, requests)
    timed.update(programs_compiled_or_loaded=len(compiles),
                 compile_or_load_s=round(sum(t for _, t in compiles), 2),
                 programs=list(compiles))
    stats = server.stats()
  finally:
    server.close()
  return dict(scheduler=args.side, setup_s=round(setup, 2), warm_passes=warm, **timed,
              host_memory=host_memory,
              server_stats=stats, peak_rss_mb=util.peak_rss_mb())


def main():
  args = parse()
  if args.side:
    print("RESULT " + json.dumps(run_side(args)), flush=True)
    return
  flags = [f"--model={args.model}", f"--requests={args.requests}", f"--rate={args.rate}",
           f"--max_tokens={args.max_tokens}", f"--seed={args.seed}",
           f"--warm_passes={args.warm_passes}"]
  load_start = util.loadavg()
  with tempfile.TemporaryDirectory() as tmp:
    runs = util.interleaved_runs(__file__, SIDES, flags, args.rounds, args.threads, tmp)
  out = dict(
      benchmark="serve_load",
      command=" ".join(["python", "experiments/benchmarks/serve_load.py"] + sys.argv[1:]),
      like_for_like=(f"{args.requests} greedy chat requests to {args.model} (float32, CPU), "
                     f"exponential arrivals at {args.rate}/s (seed {args.seed}), max_tokens "
                     f"drawn from {args.max_tokens}; the same requests and times for both "
                     "schedulers; one server process per run"),
      statistic=f"median over {args.rounds} interleaved process(es) per scheduler",
      machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                   platform=platform.platform(), loadavg_start=load_start,
                   loadavg_end=util.loadavg()))
  for side, rs in runs.items():
    block = {k: util.spread([r[k] for r in rs]) for k in
             ("latency_median_s", "latency_p90_s", "latency_mean_s", "makespan_s",
              "tokens_per_s")}
    block.update(completion_tokens=sorted({r["completion_tokens"] for r in rs}),
                 timed_programs_compiled_or_loaded=[r["programs_compiled_or_loaded"]
                                                    for r in rs],
                 loaded_runs=sum(r["loaded"] for r in rs), runs=rs)
    out[side] = block
  c, w = out["continuous"], out["window"]
  out["same_tokens_both_sides"] = c["completion_tokens"] == w["completion_tokens"]
  ratio = lambda a, b: round(a / b, 3) if a and b else None
  out["continuous_over_window"] = dict(
      tokens_per_s=ratio(c["tokens_per_s"]["median"], w["tokens_per_s"]["median"]),
      latency_mean_speedup=ratio(w["latency_mean_s"]["median"], c["latency_mean_s"]["median"]),
      latency_p90_speedup=ratio(w["latency_p90_s"]["median"], c["latency_p90_s"]["median"]))
  out["quotable"] = not (c["loaded_runs"] or w["loaded_runs"])
  util.emit(out, args.out)


if __name__ == "__main__":
  main()
