"""Per-token objective pieces against hand computations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models import lora
from optimas_jax.rl import objective
from tests.rl.conftest import PLEN, TLEN, synthetic_rollout


def test_clipped_surrogate_matches_hand_computation():
  logp = np.log(np.array([[0.5, 0.3, 0.2], [0.6, 0.1, 0.9]], np.float32))
  old = np.log(np.array([[0.25, 0.3, 0.4], [0.5, 0.2, 0.9]], np.float32))
  adv = np.array([[1.0, 1.0, -2.0], [-1.0, 0.5, 3.0]], np.float32)
  eps = 0.2
  loss, clipped = objective.clipped_surrogate(jnp.asarray(logp), jnp.asarray(old),
                                              jnp.asarray(adv), eps)
  # ratios: [[2, 1, 0.5], [1.2, 0.5, 1]]
  # A>0 takes min(r, 1.2) A; A<0 takes max(r, 0.8) A (the pessimistic side).
  want = -np.array([[1.2 * 1.0, 1.0 * 1.0, 0.8 * -2.0],
                    [1.2 * -1.0, 0.5 * 0.5, 1.0 * 3.0]], np.float32)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_array_equal(clipped, [[True, False, True], [False, False, False]])


def test_k3_kl_is_zero_at_equality_and_positive_elsewhere():
  logp = jnp.log(jnp.array([0.5, 0.5, 0.1]))
  ref = jnp.log(jnp.array([0.5, 0.25, 0.4]))
  kl = objective.k3_kl(logp, ref)
  r = np.log([1.0, 0.5, 4.0])
  np.testing.assert_allclose(kl, np.exp(r) - r - 1, rtol=1e-6)
  assert float(kl[0]) == 0.0 and np.all(np.asarray(kl[1:]) > 0)


def test_group_advantages_normalize_within_each_group():
  r = np.array([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], np.float32)
  adv = np.asarray(objective.group_advantages(r, 4))      # eps 1e-4 on a std of 0.5
  np.testing.assert_allclose(adv[:4], [1, -1, -1, 1], rtol=1e-3)
  np.testing.assert_array_equal(adv[4:], 0.0)       # no signal in a tied group


def test_gae_with_unit_gamma_lambda_is_reward_minus_value():
  values = np.array([[0.5, 0.25, 0.0], [1.0, 0.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1], [1, 0, 0]], np.float32)
  rewards = np.array([1.0, -1.0], np.float32)
  adv, ret = objective.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), 1.0, 1.0)
  np.testing.assert_allclose(adv, [[0.5, 0.75, 1.0], [-2.0, 0, 0]], rtol=1e-6)
  np.testing.assert_allclose(ret, [[1, 1, 1], [-1, 0, 0]], rtol=1e-6)
  adv, _ = objective.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), 1.0, 0.0)
  np.testing.assert_allclose(adv[0], [0.25 - 0.5, 0.0 - 0.25, 1.0], rtol=1e-6)   # TD(0)


def test_teacher_forced_logprobs_match_the_sampler(tiny_llm):
  # 32 rows x 12 new tokens in the 16-token bucket: the trainer tests' sampler program.
  gen = tiny_llm.generator
  module, base = gen.module, gen.params
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, 512, rng.integers(2, 12)).tolist() for _ in range(32)]
  out = gen.generate_ids(prompts, max_new_tokens=TLEN, temperature=0.7, rng=jax.random.key(3))
  batch = {"prompt_ids": np.zeros((32, PLEN), np.int32),
           "prompt_mask": np.zeros((32, PLEN), np.int32),
           "completion_ids": np.zeros((32, TLEN), np.int32),
           "completion_mask": np.zeros((32, TLEN), np.float32)}
  for i, (p, c) in enumerate(zip(prompts, out)):
    batch["prompt_ids"][i, PLEN - len(p):], batch["prompt_mask"][i, PLEN - len(p):] = p, 1
    n = len(c.tokens)
    batch["completion_ids"][i, :n], batch["completion_mask"][i, :n] = c.tokens, 1
  logp = _logprobs(module, base, batch, 0.7)
  for i, c in enumerate(out):
    np.testing.assert_allclose(logp[i, :len(c.tokens)], c.logprobs, atol=2e-5)
    np.testing.assert_array_equal(logp[i, len(c.tokens):], 0.0)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _logprobs(module, base, batch, temperature):
  return objective.token_logprobs(module, base, batch["prompt_ids"], batch["prompt_mask"],
                                  batch["completion_ids"], batch["completion_mask"], temperature)


@pytest.mark.parametrize("mode", ["unmerged", "merged"])
def test_a_groups_prompt_run_once_gives_the_full_pass_logprobs_and_gradients(tiny_backbone,
                                                                            mode):
  # Prompts of different lengths in runs of 4 (left padding differs between runs),
  # completions of different lengths: every row's log-probs and the adapter's
  # gradient must be the full-sequence pass's.
  module, base = tiny_backbone.module, tiny_backbone.params
  batch = synthetic_rollout(12, prompt_run=4, seed=5)
  rng = np.random.default_rng(1)
  adapter = lora.init_adapter(lora.LoraConfig(rank=2), base, 0)
  layers = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32),
                        adapter["layers"])

  def loss(layers, group):
    logp = objective.adapted_token_logprobs(module, base, {"layers": layers, "scaling": 2.0},
                                            batch, 0.7, mode, group)
    return (logp * np.linspace(-1, 1, logp.size).reshape(logp.shape)).sum(), logp

  (_, full), full_grad = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                 static_argnums=1)(layers, 1)
  (_, shared), shared_grad = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                     static_argnums=1)(layers, 4)
  np.testing.assert_allclose(shared, full, atol=1e-5)
  assert np.all(np.asarray(full)[batch["completion_mask"] == 0] == 0)
  for a, b in zip(jax.tree.leaves(shared_grad), jax.tree.leaves(full_grad)):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(np.abs(b).max()) + 1e-7)
  with pytest.raises(ValueError, match="runs of group=5"):
    loss(layers, 5)
