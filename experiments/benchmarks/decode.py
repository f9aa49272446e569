"""Decode throughput of SmolLM2-135M: JAX Generator vs transformers generate.

  python experiments/benchmarks/decode.py                      # batch 1, 8, 32
  python experiments/benchmarks/decode.py --batch_sizes=1,8 --prompt_len=64 --new_tokens=16

Prints one JSON object (and writes it to --out). Every row generates exactly
``new_tokens`` tokens (no stop tokens) after a ``prompt_len``-token prompt;
tokens/s counts new tokens over wall time including the prefill, median of
``repeats`` timed calls after one warm-up (compilation) call. Each side runs
in its own process, ``rounds`` times interleaved (JAX, PyTorch, JAX, ...),
with the load average before and after each process and the same thread
count on both sides (``--threads``; 1 is the one-thread control); a run whose
load exceeds the cores by 0.5 is marked loaded and the result is quotable
only without such runs. The PyTorch side runs LlamaForCausalLM on the same
float32 weights, copied from the JAX params; ``--dtype=bfloat16`` runs both
sides in bfloat16 (the JAX backbone loaded in bfloat16, its products summed in
float32; LlamaForCausalLM cast to bfloat16, oneDNN's bfloat16 kernels), the
like-for-like mixed-precision comparison. ``bf16_peak_rss_mb`` is the
peak resident memory of a fresh process that loads the model in bfloat16 and
generates once.
"""

from __future__ import annotations

import argparse
import os
import json
import platform
import statistics
import subprocess
import sys

import numpy as np

import lrf_bench_util as util  # experiments/benchmarks: load records, side envs, spreads
from timing import median_time  # experiments/benchmarks/timing.py


def _prompts(tokenizer, batch: int, length: int, shared: int = 0) -> list[list[int]]:
  """``batch`` prompts of ``length`` tokens; the first ``shared`` are every row's own
  copy of one system prompt, the rest rotated per row (rows differ from token 0 when
  ``shared`` is 0, right after the shared part otherwise)."""
  text = ("Optimas optimizes compound AI systems with globally aligned local rewards. "
          "Each component gets a local reward function trained on preference pairs. ")
  ids = tokenizer.encode(text * (length // 10 + 2), add_special_tokens=False)[:length]
  head, rest = ids[:shared], ids[shared:]
  return [head + rest[i % 7:] + rest[:i % 7] for i in range(batch)]


def bench_jax(backbone, batches, prompt_len, new_tokens, repeats, shared=0, reuse=True):
  from optimas_jax.models import generate
  gen = generate.Generator(backbone.module, backbone.params, backbone.pad_id,
                           max_batch=max(batches), prompt_multiple=64, prefix_reuse=reuse)
  out = {}
  for b in batches:
    prompts = _prompts(backbone.tokenizer, b, prompt_len, shared)
    run = lambda: gen.generate_ids(prompts, max_new_tokens=new_tokens)
    assert all(len(c.tokens) == new_tokens for c in run())
    sec = median_time(run, repeats)
    out[str(b)] = {"seconds": round(sec, 3), "tokens_per_s": round(b * new_tokens / sec, 1)}
  return out


def _torch_model(backbone):
  """LlamaForCausalLM holding the JAX backbone's float32 weights."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  cfg = backbone.module.config
  hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                       num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                       num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                       intermediate_size=cfg.intermediate_size, rope_theta=cfg.rope_theta,
                       rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                       max_position_embeddings=cfg.max_position_embeddings,
                       pad_token_id=backbone.pad_id)
  p = backbone.params["params"]
  t = lambda x: torch.from_numpy(np.array(x, np.float32))
  sd = {"model.embed_tokens.weight": t(p["embed_tokens"]["embedding"]),
        "model.norm.weight": t(p["norm"]["scale"])}
  names = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
           "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
           "down_proj": "mlp.down_proj"}
  for i in range(cfg.num_layers):
    layer = p[f"layer_{i}"]
    sd[f"model.layers.{i}.input_layernorm.weight"] = t(layer["input_norm"]["scale"])
    sd[f"model.layers.{i}.post_attention_layernorm.weight"] = t(layer["post_attention_norm"]["scale"])
    for ours, hf in names.items():
      sd[f"model.layers.{i}.{hf}.weight"] = t(layer[ours]["kernel"]).T.contiguous()
  sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
  model = LlamaForCausalLM(hf_cfg).eval()
  model.load_state_dict(sd, strict=True)
  return model


def bench_torch(backbone, batches, prompt_len, new_tokens, repeats, shared=0,
                dtype="float32"):
  import torch
  torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
  model = _torch_model(backbone).to(getattr(torch, dtype))
  out = {}
  for b in batches:
    ids = torch.tensor(_prompts(backbone.tokenizer, b, prompt_len, shared))
    mask = torch.ones_like(ids)

    def run():
      with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=backbone.pad_id)
    assert run().shape == (b, prompt_len + new_tokens)
    sec = median_time(run, repeats)
    out[str(b)] = {"seconds": round(sec, 3), "tokens_per_s": round(b * new_tokens / sec, 1)}
  return out, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def _proc_status_mb(field: str) -> int:
  # /proc, not getrusage: ru_maxrss survives exec, so a child would report its parent's peak.
  for line in open("/proc/self/status"):
    if line.startswith(field + ":"):
      return round(int(line.split()[1]) / 1024)
  return -1


def memory_probe() -> None:
  """Child process: load in bfloat16, generate once, print resident memory (MB)."""
  import gc
  import jax
  import jax.numpy as jnp
  from optimas_jax.models import generate, registry
  jax.numpy.zeros(1).block_until_ready()
  baseline = _proc_status_mb("VmRSS")
  b = registry.load_backbone("smollm2-135m", jnp.dtype(os.environ.get("PROBE_DTYPE", "bfloat16")))
  gc.collect()
  loaded = _proc_status_mb("VmRSS")
  gen = generate.Generator(b.module, b.params, b.pad_id)
  gen.generate_ids([b.tokenizer.encode("Hello, how are you?")], max_new_tokens=8)
  print(json.dumps({"jax_runtime_baseline_mb": baseline, "after_load_mb": loaded,
                    "after_generate_mb": _proc_status_mb("VmRSS"),
                    "peak_mb": _proc_status_mb("VmHWM"),
                    "params_mb": round(sum(x.nbytes for x in jax.tree.leaves(b.params)) / 2**20)}))


def side(name: str, batches, prompt_len: int, new_tokens: int, repeats: int,
         shared: int = 0, dtype: str = "float32") -> dict:
  """One side's process: load, then every batch size; setup = load + first call."""
  import time
  t0 = time.perf_counter()
  from optimas_jax.models import registry
  from optimas_jax.runtime import configure_process
  host_memory = configure_process()
  backbone = registry.load_backbone("smollm2-135m", dtype)
  load_s = time.perf_counter() - t0
  if name in ("jax", "jax_no_reuse"):
    import jax
    out = bench_jax(backbone, batches, prompt_len, new_tokens, repeats, shared,
                    reuse=name == "jax")
    versions = {"jax": jax.__version__, "backend": jax.default_backend()}
  else:
    out, versions = bench_torch(backbone, batches, prompt_len, new_tokens, repeats, shared,
                                dtype)
  return {"tokens_per_s": {b: r["tokens_per_s"] for b, r in out.items()},
          "seconds": {b: r["seconds"] for b, r in out.items()},
          "model_flops": {str(b): util.decode_flops(backbone.module.config, b, prompt_len,
                                                    new_tokens) for b in batches},
          "load_s": round(load_s, 3), "versions": versions, "host_memory": host_memory}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_sizes", default="1,32")
  parser.add_argument("--prompt_len", type=int, default=256)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=1, help="timed calls per process")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved processes per side")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--shared_prefix", type=int, default=0,
                      help="tokens every prompt starts with (a system prompt); > 0 adds the "
                           "side jax_no_reuse (the JAX Generator prefilling every row)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="both sides' weights and products")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--no_memory", action="store_true")
  parser.add_argument("--out", default="")
  parser.add_argument("--memory_probe", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--side", choices=("jax", "jax_no_reuse", "torch"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.memory_probe:
    return memory_probe()
  batches = [int(b) for b in args.batch_sizes.split(",")]
  if args.side:
    print("RESULT " + json.dumps(side(args.side, batches, args.prompt_len, args.new_tokens,
                                      args.repeats, args.shared_prefix, args.dtype)))
    return None
  sides = (["jax"] + (["jax_no_reuse"] if args.shared_prefix else [])
           + ([] if args.no_torch else ["torch"]))
  cache_root = os.path.expanduser("~/.cache/optimas_jax/bench")
  os.makedirs(cache_root, exist_ok=True)
  flags = [f"--batch_sizes={args.batch_sizes}", f"--prompt_len={args.prompt_len}",
           f"--new_tokens={args.new_tokens}", f"--repeats={args.repeats}",
           f"--shared_prefix={args.shared_prefix}", f"--dtype={args.dtype}"]
  peak = util.matmul_peak(args.threads)    # on the same cores, in this run
  runs = util.interleaved_runs(__file__, sides, flags, args.rounds, args.threads, cache_root)
  result = {"benchmark": "decode", "command": " ".join(["python", *sys.argv]),
            "model": f"smollm2-135m (GGUF Q4_1 dequantized to {args.dtype})",
            "dtype": args.dtype,
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            "shared_prefix": args.shared_prefix,
            "repeats_per_process": args.repeats, "rounds": args.rounds,
            "threads": {"jax": args.threads, "torch": args.threads},
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "cpu": util.cpu()},
            "runs": runs}
  for name in sides:
    result[name] = {str(b): util.spread([r["tokens_per_s"][str(b)] for r in runs[name]])
                    for b in batches}
  result["matmul_peak"] = peak
  if not args.shared_prefix:          # with a shared prefix the sides do different work
    result[f"share_of_{args.dtype}_peak"] = {
        "label": "model FLOPs (util.decode_flops: every row prefilled, the LM head once per "
                 f"new token) / median wall seconds of the run / the {args.dtype} matmul "
                 "peak measured in this run (XLA:CPU, 2048^3)",
        **{name: {str(b): round(statistics.median(
            r["model_flops"][str(b)] / r["seconds"][str(b)] for r in runs[name])
            / 1e9 / peak[f"{args.dtype}_gflops"], 3) for b in batches} for name in sides}}
  if "torch" in sides:
    result["jax_over_torch_tokens_per_s"] = {
        str(b): round(result["jax"][str(b)]["median"] / result["torch"][str(b)]["median"], 2)
        for b in batches}
  if args.shared_prefix:
    # Same prompts and outputs, not the same work: the reuse side prefills the shared
    # tokens once per batch, the other two once per row.
    result["jax_over_jax_no_reuse_tokens_per_s"] = {
        str(b): round(result["jax"][str(b)]["median"]
                      / result["jax_no_reuse"][str(b)]["median"], 2) for b in batches}
  result["loaded_runs"] = sum(r["loaded"] for rs in runs.values() for r in rs)
  result["quotable"] = result["loaded_runs"] == 0
  if not args.no_memory:
    probe = subprocess.run([sys.executable, __file__, "--memory_probe"], capture_output=True,
                           text=True, check=True)
    result["bf16_peak_rss_mb"] = json.loads(probe.stdout.strip().splitlines()[-1])
  util.emit(result, args.out)


if __name__ == "__main__":
  main()
