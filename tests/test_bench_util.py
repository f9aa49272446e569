"""The benchmarks' side processes use the cores they are given, and say what they used.

XLA:CPU ignores its thread flags for a 2048^3 product (it kept 2 cores busy with
--xla_cpu_multi_thread_eigen=false), so the one-thread control pins each side's
process by CPU affinity; these tests check that the pin holds for XLA and that the
recorded cores_busy measures it.
"""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))
import lrf_bench_util as util  # pylint: disable=wrong-import-position

# Two seconds of 1024^3 float32 products under XLA:CPU, then the process's own view.
BUSY_CHILD = """
import os, time, jax, jax.numpy as jnp
x = jnp.ones((1024, 1024)); f = jax.jit(lambda a: a @ a); f(x).block_until_ready()
t = time.perf_counter()
while time.perf_counter() - t < 2.0:
  f(x).block_until_ready()
print("AFFINITY", len(os.sched_getaffinity(0)))
"""


def _busy_run(threads):
  env = util.side_env(threads, "off", "")
  proc, usage = util.run_side_process([sys.executable, "-c", BUSY_CHILD], threads, env,
                                      capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  affinity = int(proc.stdout.split("AFFINITY")[-1])
  return affinity, usage


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 or more cores")
def test_one_thread_control_keeps_xla_on_one_core():
  affinity, usage = _busy_run(1)
  assert affinity == 1 and len(usage["cores_allowed"]) == 1
  assert usage["cores_busy"] <= 1.05, usage
  assert usage["cpu_s"] > 1.5, usage            # the child did run its 2 s of products


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 or more cores")
def test_two_threads_are_measured_as_more_than_one_core():
  affinity, usage = _busy_run(2)
  assert affinity == 2 and len(usage["cores_allowed"]) == 2
  # Import and start-up are single-threaded; the 2 s of products use both cores.
  assert usage["cores_busy"] > 1.2, usage


def test_thread_count_below_one_is_refused():
  with pytest.raises(ValueError, match="--threads=0"):
    util.allowed_cores(0)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads Linux's /proc/cpuinfo")
def test_the_cpu_record_tells_cpu_generations_apart():
  record = util.cpu()
  family, model = record["family_model"].split("/")
  assert family.isdigit() and model.isdigit(), record
  assert set(record["bf16_units"]) <= {"avx512_bf16", "amx_bf16"}


def test_generator_before_after_refuses_a_folder_without_the_package(tmp_path):
  """Bad input is named with its fix before any model loads."""
  import subprocess  # pylint: disable=import-outside-toplevel
  script = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / \
      "generator_before_after.py"
  proc = subprocess.run([sys.executable, str(script), f"--before={tmp_path}", "--after=."],
                        capture_output=True, text=True, timeout=60,
                        cwd=pathlib.Path(__file__).resolve().parents[1])
  assert proc.returncode == 2
  assert f"--before={tmp_path}: no optimas_jax/ package there" in proc.stderr
  assert "git worktree add" in proc.stderr


def test_model_flop_counts_match_a_hand_count():
  """One layer, hidden 4, one head of 4, intermediate 8, vocab 10: 160 layer weights."""
  import argparse  # pylint: disable=import-outside-toplevel
  cfg = argparse.Namespace(hidden_size=4, num_layers=1, num_heads=1, num_kv_heads=1,
                           head_dim=4, intermediate_size=8, vocab_size=10)
  # 3 tokens: products 2 x 160 x 3 = 960, attention 4 x (1+2+3) x 4 = 96, head 2 x 2 x 40.
  assert util.llama_forward_flops(cfg, 1, 3, 2) == 960 + 96 + 160
  # Generating 2 tokens after a 2-token prompt feeds 3 tokens, 2 logit positions; 2 rows.
  assert util.decode_flops(cfg, 2, 2, 2) == 2 * (960 + 96 + 160)
  # The GRPO step over 4 tokens: forward 1280 + 160 + 160 = 1600 (reference and policy),
  # backward 1280 + 2 x 160 + 160 = 1760, sampling 1216.
  flops = util.grpo_lora_step_flops(cfg, 1, 2, 2)
  assert flops == {"sampling": 1216, "reference_forward": 1600, "policy_forward": 1600,
                   "policy_backward": 1760, "total": 1216 + 1600 + 1600 + 1760}
