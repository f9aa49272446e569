"""Tiny-Llama fixtures for the RL tests (random LlamaConfig.tiny weights).

Compiles dominate these tests' time, so shapes are shared on purpose: the
PPO config and the synthetic minibatch below have the shapes of
test_trainer's PPO step (4 prompts x 8 samples, 16-token prompt bucket, 12
new tokens, 2 minibatches x 2 micro-batches), and jitted updates are cached
per (model, config, mesh), so one compiled update serves every test.
"""

import functools

import chex
import jax
import numpy as np
import pytest

from optimas_jax.llm.local import LocalLLM
from optimas_jax.models import registry
from optimas_jax.models import lora
from optimas_jax.rl import objective
from optimas_jax.rl.config import RLConfig
from optimas_jax.rl.update import Updater

PROMPTS = ["The cat", "A dog", "Hello", "Once upon"]
PPO = RLConfig(algorithm="ppo", group_size=8, max_new_tokens=12, kl_coef=0.1, inner_epochs=1,
               learning_rate=1e-2, minibatches=2, accum_steps=2, lora=lora.LoraConfig(rank=2))
# Minibatch shape of PPO on PROMPTS: 32 rows / 2 minibatches = (2 micro-batches, 8 rows).
PLEN, TLEN, ROWS = 16, 12, 16


@pytest.fixture(scope="session")
def tiny_backbone():
  return registry.load_backbone("tiny-llama")


@pytest.fixture(scope="session")
def tiny_llm(tiny_backbone):
  # Own instance (not load_local_llm's shared one): short prompt buckets.
  return LocalLLM(tiny_backbone, prompt_multiple=PLEN, max_batch=32)


@pytest.fixture(scope="session")
def ppo_updater(tiny_backbone):
  chex.clear_trace_counter()
  return Updater(tiny_backbone.module, PPO, max_traces=1)


def synthetic_rollout(rows: int, plen: int = PLEN, tlen: int = TLEN, seed: int = 0,
                      vocab: int = 512, prompt_run: int = 2):
  """Host rollout arrays: left-padded prompts, each repeated in a run of
  ``prompt_run`` rows (a GRPO group's samples), right-padded completions."""
  rng = np.random.default_rng(seed)
  prompt_len = rng.integers(2, plen + 1, rows // prompt_run)
  completion_len = rng.integers(1, tlen + 1, rows)
  p_mask = (np.arange(plen)[None] >= plen - prompt_len[:, None]).astype(np.int32)
  c_mask = (np.arange(tlen)[None] < completion_len[:, None]).astype(np.float32)
  p_ids = (rng.integers(3, vocab, (rows // prompt_run, plen)) * p_mask).astype(np.int32)
  return {"prompt_ids": np.repeat(p_ids, prompt_run, 0),
          "prompt_mask": np.repeat(p_mask, prompt_run, 0),
          "completion_ids": (rng.integers(3, vocab, (rows, tlen)) * c_mask).astype(np.int32),
          "completion_mask": c_mask}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _policy_logprobs(module, base, adapter, rollout, temperature):
  return objective.adapted_token_logprobs(module, base, adapter, rollout, temperature)


def update_batch(updater, base, state, seed: int = 0, rows: int = ROWS):
  """A host (accum, rows / accum, ...) minibatch: synthetic rollout (prompts in runs
  of 2), old log-probs from the current adapter, the reference pass, random
  per-sequence advantages."""
  cfg = updater.config
  # A whole rollout (2 minibatches) goes through the passes, as in the trainer.
  rollout = synthetic_rollout(rows * cfg.minibatches, seed=seed)
  adapter = {"layers": jax.device_get(state.trainable["lora"]), "scaling": cfg.lora.scaling}
  old = _policy_logprobs(updater.module, base, adapter, rollout, cfg.temperature)
  batch = dict(rollout, old_logprobs=np.asarray(old))
  scored = updater.score(updater.place_base(base), state.trainable,
                         jax.device_put(rollout, updater.rows))
  batch.update({k: np.asarray(v) for k, v in jax.device_get(scored).items()})
  batch = {k: v[:rows] for k, v in batch.items()}
  rollout = {k: v[:rows] for k, v in rollout.items()}
  rng = np.random.default_rng(seed + 1)
  batch["advantages"] = rng.normal(size=(rows, 1)).astype(np.float32) * rollout["completion_mask"]
  if "values" in batch:
    batch["returns"] = batch.pop("values") + batch["advantages"]
  accum = cfg.accum_steps
  return {k: v.reshape((accum, rows // accum) + v.shape[1:]) for k, v in batch.items()}
