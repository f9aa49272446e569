"""The RL experiment end to end: GeoQA-hop's query writer, a SmolLM2 LoRA
adapter, trained by GRPO against its LRF inside the Optimas loop."""

import json
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from optimas_jax.optimize import text_policy
from optimas_jax.tasks.base import TextPolicy

ROOT = pathlib.Path(__file__).parents[2]


def test_smoke_config_trains_the_adapter_against_its_lrf(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "optimas_jax.main", "--config=experiments/geoqa_rl.py:smoke",
       f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The RL step's per-device memory, at start-up (a bound) and at the local step.
  assert proc.stderr.count("RL step: per-device estimate base ") == 2
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  (it,) = [r for r in records if r["event"] == "iteration"]
  assert it["component"] == "query_writer"
  local = it["local"]
  # 2 RL steps x 2 prompts x 2 samples, every one scored by the LRF (no system run).
  assert local["rl_steps"] == 2 and local["samples"] == 8
  assert np.isfinite([local["reward_first"], local["reward_last"], local["kl_last"]]).all()
  assert it["collect"]["pairs"] > 0 and it["alignment"] is not None
  summary = json.loads((tmp_path / "summary.json").read_text())
  # RL against the LRF costs no system runs: the budget is init val + collection +
  # the fresh pairs' rollouts + the candidate's validation, nothing per sample.
  assert summary["budget_runs"] == it["budget"]
  assert (tmp_path / "final_config" / "query_writer.npz").exists()   # the adapter


class _EchoLLM:
  """Stands in for the policy's LLM in the glue test (no trainer is built)."""

  def render(self, request):
    return request[-1]["content"]


def test_a_step_with_no_inputs_is_skipped_and_rewards_map_back_to_inputs(monkeypatch):
  policy = TextPolicy(_EchoLLM(), lambda xs: [[{"role": "user", "content": x["q"]}] for x in xs],
                      lambda text: {"query": text}, max_new_tokens=4)
  adapter = {"layers": {"layer_0": {"q_proj": {"a": np.zeros((8, 2)), "b": np.zeros((2, 8))}}},
             "scaling": np.float32(2.0), "base_digest": np.zeros(32, np.uint8)}
  new, stats = text_policy.optimize(policy, adapter, [], None, None, np.random.default_rng(0))
  assert new is adapter and "skipped" in stats
  config = text_policy.lora_config_of(adapter)
  assert (config.rank, config.alpha, config.targets) == (2, 4.0, ("q_proj",))

  seen = []

  class FakeTrainer:
    def __init__(self, llm, config, adapter, seed):
      self.adapter = adapter

    def longest_prompt(self, prompts):
      return max(map(len, prompts))

    def memory_estimate(self, prompts, prompt_tokens):
      return f"RL step: {prompts} prompts of {prompt_tokens} tokens"

    def step(self, prompts, reward_fn, seed):
      rewards = reward_fn([p for p in prompts for _ in range(2)], ["a", "b"] * len(prompts))
      return {"reward_mean": float(np.mean(rewards)), "kl": 0.0}

  import optimas_jax.rl.trainer as trainer_lib
  monkeypatch.setattr(trainer_lib, "RLTrainer", FakeTrainer)

  def reward(rows, outputs):
    seen.append((list(rows), [o["query"] for o in outputs]))
    return np.array([float(r) for r in rows])

  RL = ml_collections.ConfigDict(dict(
      algorithm="grpo", group_size=2, inner_epochs=1, learning_rate=1e-3, kl_coef=0.0,
      clip_eps=0.2, temperature=1.0, steps=3, prompts=2))

  # Inputs 0 and 2 render to the same prompt: each must still be rewarded as its own row.
  inputs = [{"q": "same"}, {"q": "one"}, {"q": "same"}]
  _, stats = text_policy.optimize(policy, adapter, inputs, reward, RL, np.random.default_rng(0))
  assert stats["rl_steps"] == 3 and stats["samples"] == 12
  for rows, texts in seen:        # each sample's reward is asked for its own input
    assert len(rows) == 4 and texts == ["a", "b"] * 2 and rows[0] == rows[1]
    assert rows[2] == rows[3] and rows[0] != rows[2]
  assert {0, 2} <= {r for rows, _ in seen for r in rows}
