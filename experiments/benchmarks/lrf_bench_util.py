"""Framework-free pieces shared by the benchmarks and both sides of each.

Imported by JAX and PyTorch children alike, so it imports neither framework: a
clock that leaves evaluation out, the learning-rate schedule both LRF sides follow
step for step, peak RSS and load average; the side processes pinned to their cores
with the CPU they used measured (`run_side_process`), the matmul peak measured in a
run (`matmul_peak`) and the model FLOPs that turn a rate into a share of it.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import statistics
import time


class Clock:
  """Seconds since start, leaving out the time spent inside `paused()`."""

  def __init__(self):
    self._start = time.perf_counter()
    self._paused = 0.0

  def now(self) -> float:
    return time.perf_counter() - self._start - self._paused

  @contextlib.contextmanager
  def paused(self):
    t = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - t


class Recorder:
  """Setup / train split, eval curve, and the fixed evaluation points."""

  def __init__(self, clock: Clock, eval_every: int, total_steps: int):
    self.clock = clock
    self.eval_every = eval_every
    self.total_steps = total_steps
    self.setup_s = None
    self.setup_parts: dict[str, float] = {}
    self.curve: list[dict] = []
    self.step_s: list[float] = []
    self.pairs = 0
    self.steps = 0
    self.warmup_steps = 0   # steps run on a throwaway state to compile
    self._mark = clock.now()

  def part(self, name: str):
    """Closes a named setup phase (load, init, cache fill, compile)."""
    t = self.clock.now()
    self.setup_parts[name] = round(t - self._mark, 3)
    self._mark = t

  def start_training(self):
    self.setup_s = self.clock.now()
    self._busy = cpu_meter()

  def train_s(self) -> float:
    return self.clock.now() - self.setup_s

  def step_done(self, pairs: int, seconds: float):
    self.steps += 1
    self.pairs += pairs
    self.step_s.append(seconds)

  def due(self) -> bool:
    return self.steps % self.eval_every == 0 or self.steps == self.total_steps

  def point(self, accuracy: float):
    """Records an eval point; call it after the `clock.paused()` block that
    ran the evaluation (inside it, the running pause is not yet subtracted)."""
    t = self.clock.now()
    self.curve.append(dict(step=self.steps, pairs=self.pairs,
                           seconds=round(t, 3),
                           train_seconds=round(t - self.setup_s, 3),
                           accuracy=round(accuracy, 4)))

  def result(self, target: float) -> dict:
    """Totals and the curve. Warm-up steps (run only to compile) are taken
    out of setup at the median step time, leaving their compile time in."""
    step_median = sorted(self.step_s)[len(self.step_s) // 2]
    adjust = self.warmup_steps * step_median
    setup_s = self.setup_s - adjust
    parts = dict(self.setup_parts)
    if self.warmup_steps:
      parts["compile"] = round(parts["compile"] - adjust, 3)
      parts["warmup_step_execution_taken_out"] = round(adjust, 3)
    curve = [dict(c, seconds=round(c["seconds"] - adjust, 3)) for c in self.curve]
    train_s = self.train_s()
    hit = next((c for c in curve if c["accuracy"] >= target), None)
    return dict(
        pairs_trained=self.pairs, steps=self.steps,
        setup_s=round(setup_s, 3), setup_parts=parts,
        train_s=round(train_s, 3),
        pairs_per_s=self.pairs / train_s,
        pairs_per_s_with_setup=self.pairs / (train_s + setup_s),
        step_s_median=step_median,
        step_s=[round(s, 4) for s in self.step_s],     # in order: the first steps' cost
        seconds_to_target=hit["seconds"] if hit else None,
        train_seconds_to_target=hit["train_seconds"] if hit else None,
        never_reached=hit is None,
        train_loop_cores_busy=self._busy(),
        best_accuracy=max(c["accuracy"] for c in curve),
        final_accuracy=curve[-1]["accuracy"],
        curve=curve)


def cpu_meter():
  """Starts measuring this process; the returned function gives the cores it kept busy
  since (CPU seconds of all its threads / wall seconds)."""
  t, c = time.perf_counter(), time.process_time()
  return lambda: round((time.process_time() - c) / max(time.perf_counter() - t, 1e-9), 2)


def lr_at(step: int, lr: float, warmup: int, total: int) -> float:
  """optax.warmup_cosine_decay_schedule(0, lr, warmup, total, 0.1 * lr) at
  update `step` (0-based), as the JAX trainer builds it; the PyTorch side
  applies the same value before each optimizer step."""
  warmup = min(warmup, max(total - 1, 0))
  total = max(total, warmup + 1)
  if step < warmup:
    return lr * step / warmup
  frac = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
  end = 0.1 * lr
  return end + (lr - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


def peak_rss_mb() -> float:
  """Peak RSS of this process in MB: /proc VmHWM, not getrusage (ru_maxrss
  survives exec, so a child would report its parent's peak)."""
  hwm = peak_rss_since_reset_mb()
  if hwm is not None:
    return hwm
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> float:
  """Resets the kernel's peak-RSS mark (VmHWM, also what getrusage reports)
  to the current RSS (Linux); returns the peak in MB before the reset."""
  before = peak_rss_mb()
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
  except OSError:
    pass
  return before


def peak_rss_since_reset_mb() -> float | None:
  """VmHWM in MB: peak RSS since start or `reset_peak_rss()` (None off Linux)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return round(int(line.split()[1]) / 1024.0, 1)
  except OSError:
    pass
  return None


def loadavg() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def group_pairs(scores) -> list[tuple[int, int]]:
  """(chosen, rejected) candidate indices of a group: the pairs the grouped BT loss counts."""
  from optimas_jax.core.pairs import pair_indices
  return pair_indices(scores)


# -------------------------------------------------------------- honest runs


def side_env(threads: int, cache: str, cache_root: str) -> dict:
  """The environment of one side's process: its thread count (both frameworks' pools)
  and its compilation cache ("cold": a fresh empty folder; "warm": a kept one; "off").
  The cores a side may use are set by `run_side_process` (CPU affinity): XLA:CPU
  takes no thread-count setting that holds."""
  env = dict(os.environ)
  env["BENCH_THREADS"] = str(threads)
  env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
  if cache == "off":
    env["OPTIMAS_JAX_COMPILATION_CACHE"] = ""
  elif cache == "cold":
    import tempfile  # pylint: disable=import-outside-toplevel
    env["OPTIMAS_JAX_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="xla-cold-", dir=cache_root)
  else:
    env["OPTIMAS_JAX_COMPILATION_CACHE"] = os.path.join(cache_root, "xla-warm")
  return env


def allowed_cores(threads: int) -> list[int]:
  """The cores a side with `threads` threads is pinned to: the first `threads` of this
  process's own (all of them when `threads` covers them)."""
  cores = sorted(os.sched_getaffinity(0))
  if threads < 1:
    raise ValueError(f"--threads={threads}: use 1 or more")
  return cores[:threads]


def run_side_process(argv: list[str], threads: int, env: dict | None = None,
                     **kwargs):
  """Runs one side's process (`subprocess.run(argv, **kwargs)`) on `allowed_cores(threads)`
  and measures the CPU it used. Returns (completed process, usage record).

  Why affinity: `torch.set_num_threads` bounds PyTorch, but XLA:CPU sizes its pools
  from the cores the process may run on, and its thread flags
  (--xla_cpu_multi_thread_eigen=false, intra_op_parallelism_threads=1) leave a
  2048^3 product on 2 busy cores (measured: 1.96 cores busy with or without them;
  1.00 under affinity). The record says what was used, not what was asked:
  cores_busy = the child's CPU seconds / its wall seconds.
  """
  import subprocess  # pylint: disable=import-outside-toplevel
  cores = allowed_cores(threads)
  mine = os.sched_getaffinity(0)
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t = time.perf_counter()
  # The child inherits the calling thread's mask; no preexec_fn, which would make
  # subprocess fork a parent that may already run JAX's threads.
  os.sched_setaffinity(0, cores)
  try:
    proc = subprocess.run(argv, env=env, check=False, **kwargs)
  finally:
    os.sched_setaffinity(0, mine)
  wall = time.perf_counter() - t
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return proc, {"cores_allowed": cores, "cpu_s": round(cpu, 2),
                "cores_busy": round(cpu / wall, 2) if wall > 0 else None}


def median_call_seconds(fn, iters: int) -> float:
  """Median wall seconds of `iters` calls of `fn` (which returns JAX arrays, waited on),
  after one call that compiles it."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.block_until_ready(fn())
  runs = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    runs.append(time.perf_counter() - t)
  return statistics.median(runs)


def cpu() -> dict:
  """The CPU model and its bfloat16 matrix units, from /proc/cpuinfo (Linux): hosts
  under one machine name differ, and a ratio holds for the CPU it was measured on."""
  fields, flags = {}, set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "flags":
          flags = set(value.split())
        elif key in ("model name", "cpu family", "model"):
          fields.setdefault(key, value)
  except OSError:
    pass
  # A virtual machine's model name can be generic: family/model tell the generations apart.
  return {"model": fields.get("model name", platform.processor() or "unknown"),
          "family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
          "bf16_units": sorted(flags & {"avx512_bf16", "amx_bf16"})}


def matmul_peak(threads: int, n: int = 2048, iters: int = 5) -> dict:
  """This machine's matmul peak under XLA:CPU on the benchmark's own cores, measured now
  in a process of its own (matmul_peak.py's JAX child): GFLOP/s of the best of `iters`
  n^3 products, float32 and bfloat16 (summed in float32)."""
  import json  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "matmul_peak.py")
  proc, usage = run_side_process([sys.executable, script, "--child=jax", f"--n={n}",
                                  f"--iters={iters}"], threads, None,
                                 capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("MATMUL_RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"matmul peak probe failed: {proc.stderr[-1000:]}")
  out = json.loads(lines[-1][len("MATMUL_RESULT "):])
  return {"float32_gflops": round(out["float32"], 1),
          "bfloat16_gflops": round(out["bfloat16"], 1),
          "product": f"{n}x{n}x{n}, best of {iters}, XLA:CPU",
          "cores_allowed": usage["cores_allowed"], "loadavg": loadavg()}


def bert_flops_per_text(hidden: int, intermediate: int, layers: int, tokens: int,
                        train: bool = True) -> float:
  """Model FLOPs to encode one text of `tokens` tokens through `layers` BERT layers:
  the Dense products (2 per weight per token) and attention's two products (2 x 2 x
  tokens x hidden per token); x3 for forward + backward when `train`."""
  per_token = 2 * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * tokens * hidden
  return per_token * tokens * layers * (3 if train else 1)


def _llama_parts(cfg, tokens: int) -> tuple[float, float]:
  """(products with the layers' weights, attention's two products) in FLOPs for one row
  of `tokens` causal tokens through a Llama-family config's layers."""
  h, d = cfg.hidden_size, cfg.head_dim
  layer_weights = (h * cfg.num_heads * d + 2 * h * cfg.num_kv_heads * d
                   + cfg.num_heads * d * h + 3 * h * cfg.intermediate_size)
  dense = cfg.num_layers * 2 * layer_weights * tokens
  attention = sum(cfg.num_layers * 4 * (position + 1) * cfg.num_heads * d
                  for position in range(tokens))
  return float(dense), float(attention)


def llama_forward_flops(cfg, batch: int, tokens: int, logit_positions: int) -> float:
  """Model FLOPs of one forward pass of `batch` rows of `tokens` causal tokens with a
  Llama-family config (`cfg`: hidden_size, num_layers, num_heads, num_kv_heads,
  head_dim, intermediate_size, vocab_size): 2 per layer weight per token, attention's
  two products over the tokens before each, the LM head at `logit_positions` a row."""
  dense, attention = _llama_parts(cfg, tokens)
  return (dense + attention + logit_positions * 2 * cfg.hidden_size * cfg.vocab_size) * batch


def decode_flops(cfg, batch: int, prompt_len: int, new_tokens: int) -> float:
  """Model FLOPs of generating `new_tokens` for `batch` prompts of `prompt_len` tokens:
  the forward pass over every token fed (the last new token is not), the LM head once
  per new token (`llama_forward_flops`)."""
  return llama_forward_flops(cfg, batch, prompt_len + new_tokens - 1, new_tokens)


def grpo_lora_step_flops(cfg, rows: int, prompt_len: int, new_tokens: int) -> dict:
  """Model FLOPs of one GRPO step with LoRA over a frozen base, every row running its own
  prompt (TRL's work): sampling (`decode_flops`), the reference pass (a forward over
  prompt + completion, logits at the completion's positions) and the policy's forward
  + backward. The frozen base's backward forms the activations' gradients only (one
  product per weight product of the forward: no weight gradient) and attention's two
  products per forward product; the rank-r adapters' products are not counted."""
  tokens = prompt_len + new_tokens
  forward = llama_forward_flops(cfg, rows, tokens, new_tokens)
  dense, attention = _llama_parts(cfg, tokens)
  head = new_tokens * 2 * cfg.hidden_size * cfg.vocab_size
  backward = (dense + 2 * attention + head) * rows
  parts = {"sampling": decode_flops(cfg, rows, prompt_len, new_tokens),
           "reference_forward": forward, "policy_forward": forward,
           "policy_backward": backward}
  return {**parts, "total": sum(parts.values())}


def load_record(before: list[float], after: list[float]) -> dict:
  """Load averages around one run, and whether the run counts as loaded: a 1-minute load
  above the machine's cores + 0.5 at either end. A loaded run is never quoted."""
  cores = os.cpu_count() or 1
  return {"loadavg_before": before, "loadavg_after": after,
          "loaded": max(before[0], after[0]) > cores + 0.5}


def spread(xs) -> dict:
  """Median and range of a list of numbers (None: never reached)."""
  vals = [x for x in xs if x is not None]
  if not vals:
    return {"median": None, "min": None, "max": None}
  return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def interleaved_runs(script: str, sides, flags, rounds: int, threads: int,
                     cache_root: str) -> dict:
  """`rounds` processes per side, interleaved (A B A B ...): each runs
  `script --side=<side> *flags` and prints "RESULT <json>"; its result gets the load
  record around it. A side's process that fails stops the benchmark."""
  import json  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  runs = {s: [] for s in sides}
  for _ in range(rounds):
    for name in sides:
      before = loadavg()
      child, usage = run_side_process([sys.executable, script, f"--side={name}", *flags],
                                      threads, side_env(threads, "warm", cache_root),
                                      capture_output=True, text=True)
      lines = [l for l in child.stdout.splitlines() if l.startswith("RESULT ")]
      if child.returncode or not lines:
        raise RuntimeError(f"{name} side failed: {child.stderr[-2000:]}")
      runs[name].append({**json.loads(lines[-1][len("RESULT "):]), **usage,
                         **load_record(before, loadavg())})
  return runs


def emit(result: dict, out: str = "", indent: int = 1) -> None:
  """Prints the benchmark's one JSON object and writes it to `out` when given."""
  import json  # pylint: disable=import-outside-toplevel
  text = json.dumps(result, indent=indent)
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text)
