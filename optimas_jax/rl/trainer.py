"""RLTrainer: one LLM component trained by GRPO/PPO against its local reward.

``RLTrainer(llm, config).step(prompts, reward_fn, seed)``:

1. sample ``group_size`` completions per prompt with the current adapter
   (merged into the base once per step; each row with its own key);
2. call ``reward_fn(prompts_repeated, completions) -> (N,)`` on the host,
   outside any jit, and check its answer;
3. score the rollout with the frozen base (KL reference; PPO values) and
   compute advantages;
4. ``inner_epochs`` shuffled passes of ``minibatches`` jitted updates.

The state (``trainer.state``: adapter factors, value head, AdamW moments,
step) is an array pytree for orbax; ``trainer.adapter`` is the current
adapter as a host copy (a ``ModelParameters`` value, safe to keep: the
update donates the device state).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, Sequence

import jax
import numpy as np

from optimas_jax.core.mesh import check_fits, per_device_bytes, to_global, to_host
from optimas_jax.llm.base import Generation
from optimas_jax.models import generate as gen_lib
from optimas_jax.models.tokenizer import pad_ids
from optimas_jax.models import lora
from optimas_jax.rl import memory, objective
from optimas_jax.rl.config import RLConfig
from optimas_jax.rl.update import RLState, Updater

RewardFn = Callable[[list[str], list[str]], np.ndarray]


def check_rewards(rewards, num_rows: int, where: str = "reward_fn") -> np.ndarray:
  """``rewards`` as float32 (num_rows,), or ValueError saying what is wrong."""
  try:
    arr = np.asarray(rewards)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{where} returned {type(rewards).__name__}, not convertible to an "
                     f"array: {e}") from e
  if arr.dtype.kind not in "biuf":
    raise ValueError(f"{where} returned dtype {arr.dtype}; expected numbers "
                     "(a float array, one reward per completion)")
  if arr.shape != (num_rows,):
    raise ValueError(f"{where} returned shape {arr.shape}; expected ({num_rows},): one reward "
                     "per completion, in the order of the completions it was given")
  arr = arr.astype(np.float32)
  bad = np.flatnonzero(~np.isfinite(arr))
  if bad.size:
    raise ValueError(f"{where} returned non-finite rewards (NaN/inf) at rows "
                     f"{bad[:8].tolist()}; return a finite score for every completion")
  return arr


_group_advantages = jax.jit(objective.group_advantages, static_argnums=(1, 2))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _ppo_advantages(rewards, values, mask, gamma, lam):
  """Whitened GAE advantages and returns over the real tokens."""
  advantages, returns = objective.gae(rewards, values, mask, gamma, lam)
  return objective.whiten(advantages, mask), returns


class RLTrainer:
  """GRPO / PPO on a LoRA adapter of a ``LocalLLM``'s decoder."""

  def __init__(self, llm, config: RLConfig = RLConfig(), *, seed: int = 0, adapter=None,
               mesh=None, max_traces: int | None = None):
    self.llm, self.config = llm, config.validate()
    self.module = llm.generator.module
    self.base = llm.generator.params
    if adapter is None:
      adapter = lora.init_adapter(config.lora, self.base, seed)
    else:
      lora.check_compatible(adapter, self.base, "RLTrainer adapter")
      ranks = {np.shape(ab["a"])[1] for m in adapter["layers"].values() for ab in m.values()}
      if ranks != {config.lora.rank} or not np.isclose(float(np.asarray(adapter["scaling"])),
                                                        config.lora.scaling):
        raise ValueError(f"adapter has rank {sorted(ranks)}, scaling "
                         f"{float(np.asarray(adapter['scaling']))}; RLConfig.lora has rank "
                         f"{config.lora.rank}, alpha/rank {config.lora.scaling}: pass the "
                         "LoraConfig the adapter was made with (models.lora.load_adapter returns it)")
    self._digest = np.asarray(adapter["base_digest"], np.uint8)
    self.updater = Updater(self.module, config, mesh, max_traces)
    self.base_on_mesh = self.updater.place_base(self.base)
    if jax.process_count() == 1:
      # One copy of the base per device set: the sampler (and every other user of this
      # LLM) decodes from the updater's split weights, rows split over the mesh. Across
      # processes the LLM keeps its own copy: system components call it per process.
      llm.generator.params, llm.generator.mesh = self.base_on_mesh, self.updater.mesh
      self.base = self.base_on_mesh
    self.state: RLState = self.updater.init_state(adapter, self.module.config.hidden_size)
    self._stop_ids = list(llm.tokenizer.eos_ids) if config.stop_at_eos else []

  @property
  def adapter(self) -> dict:
    """The current adapter (host numpy copy): a ModelParameters value."""
    return {"base_digest": self._digest.copy(),
            "scaling": np.asarray(self.config.lora.scaling, np.float32),
            "layers": jax.device_get(self.state.trainable["lora"])}

  def longest_prompt(self, prompts: Sequence) -> int:
    """Tokens of the longest of `prompts` as a step would feed them."""
    texts = [self.llm.render(p) for p in prompts]
    return max(map(len, self.llm.tokenizer.encode_batch(texts, add_special_tokens=False)))

  def memory_estimate(self, prompts: int, prompt_tokens: int, limit: int | None = None) -> str:
    """Per-device bytes of a step of `prompts` prompts of up to `prompt_tokens` tokens,
    checked against the device's memory (MemoryError naming the fields to change)."""
    gen = self.llm.generator
    prompt_tokens = min(gen_lib.bucket_length(prompt_tokens, gen.prompt_multiple),
                        gen.max_context - self.config.max_new_tokens)
    estimate = memory.parts(
        self.module.config, self.config, base_bytes=per_device_bytes(self.base_on_mesh),
        state_bytes=per_device_bytes(self.state), devices=self.updater.devices,
        rows=self._rows(prompts * self.config.group_size), prompt_tokens=prompt_tokens,
        decode_rows=gen.max_batch)
    return check_fits(
        estimate, "RL step",
        "lower config.optimizers.rl.prompts or group_size (rows), raise minibatches or "
        "accum_steps (activations), lower max_new_tokens, or run on more devices "
        "(the base splits over fsdp)", limit)

  # ------------------------------------------------------------ rollouts

  def _sample(self, prompt_ids: list[list[int]], seed: int):
    """Completions of every prompt row with the current adapter (one key per row)."""
    cfg = self.config
    layers = jax.device_get(self.state.trainable["lora"])   # small; lands next to the base
    adapter = {"layers": layers, "scaling": cfg.lora.scaling}
    # The policy the update trains, also in bfloat16 (lora.sampling_mode).
    if lora.sampling_mode(lora.base_dtype(self.base)) == "merged":
      params, unmerged = lora.merge(self.base, adapter), None
    else:
      params, unmerged = self.base, adapter
    return self.llm.generator.generate_ids(
        prompt_ids, max_new_tokens=cfg.max_new_tokens, stop_ids=self._stop_ids,
        temperature=cfg.temperature, top_p=cfg.top_p, rng=jax.random.key(seed),
        params=params, adapter=unmerged, repeated_prompts=cfg.share_prompts)

  def _count_usage(self, completions) -> None:
    """RL samples are LLM work: they go into the backend's token ledger."""
    self.llm.usage.add([
        Generation("", len(c.tokens), c.prompt_tokens, "stop" if c.stopped else "length",
                   truncated_prompt_tokens=c.truncated) for c in completions])

  def _rollout_arrays(self, prompt_ids, completions, rows: int):
    """Host arrays, padded to ``rows`` rows (extra rows are all-masked)."""
    gen = self.llm.generator
    tlen = self.config.max_new_tokens
    room = gen.max_context - tlen
    prompts = [p[len(p) - min(len(p), room):] or [gen.pad_id] for p in prompt_ids]
    plen = min(gen_lib.bucket_length(max(map(len, prompts)), gen.prompt_multiple), room)
    filler = [[gen.pad_id]] * (rows - len(prompts))
    p_ids, p_mask = pad_ids(prompts + filler, gen.pad_id, length=plen, side="left")
    if filler:
      p_mask[len(prompts):] = 0
    c_ids = np.full((rows, tlen), gen.pad_id, np.int32)
    c_mask = np.zeros((rows, tlen), np.float32)
    old = np.zeros((rows, tlen), np.float32)
    for i, c in enumerate(completions):
      n = len(c.tokens)
      c_ids[i, :n], c_mask[i, :n], old[i, :n] = c.tokens, 1.0, c.logprobs
    return {"prompt_ids": np.asarray(p_ids, np.int32), "prompt_mask": np.asarray(p_mask, np.int32),
            "completion_ids": c_ids, "completion_mask": c_mask, "old_logprobs": old}

  def _text(self, tokens: list[int]) -> str:
    if tokens and tokens[-1] in self.llm.tokenizer.eos_ids:
      tokens = tokens[:-1]
    return self.llm.tokenizer.decode(tokens)

  def _rows(self, n: int) -> int:
    """Rows after padding: a multiple of minibatches x accum_steps x devices."""
    unit = self.config.minibatches * self.config.accum_steps * self.updater.devices
    return -(-n // unit) * unit

  # ------------------------------------------------------------ the step

  def step(self, prompts: Sequence, reward_fn: RewardFn, seed: int) -> dict:
    """One RL step on ``prompts``; returns host stats.

    ``seed`` is this step's sampling seed (row r samples with
    ``fold_in(key(seed), r)``); give each step its own. Stats: reward_mean /
    reward_std, kl (mean k3 over the updates; None when kl_coef = 0),
    clip_fraction, loss, policy_loss, grad_norm (value_loss for PPO), means
    over the step's updates; completion_tokens, completion_length,
    prompt_tokens, updates, optimizer_step; seconds and its parts
    sample_seconds, reward_seconds, update_seconds.
    """
    if isinstance(prompts, str) or not len(prompts):
      raise ValueError("RLTrainer.step(prompts=...): give a non-empty list of prompts")
    cfg, g = self.config, self.config.group_size
    t0 = time.perf_counter()
    texts = [self.llm.render(p) for p in prompts]
    encoded = self.llm.tokenizer.encode_batch(texts, add_special_tokens=False)
    prompt_ids = [list(ids) for ids in encoded for _ in range(g)]
    completions = self._sample(prompt_ids, seed)
    self._count_usage(completions)
    t_sample = time.perf_counter()

    repeated = [p if isinstance(p, str) else t for p, t in zip(prompts, texts) for _ in range(g)]
    completion_texts = [self._text(c.tokens) for c in completions]
    try:
      raw = reward_fn(repeated, completion_texts)
    except Exception as e:
      e.add_note(f"(raised inside reward_fn, called by RLTrainer.step on "
                 f"{len(completion_texts)} completions)")
      raise
    rewards = check_rewards(raw, len(completions))
    t_reward = time.perf_counter()

    n = len(completions)
    rows = self._rows(n)
    rollout = self._rollout_arrays(prompt_ids, completions, rows)
    padded_rewards = np.zeros((rows,), np.float32)
    padded_rewards[:n] = rewards
    group = self._prompt_group(rollout)
    update, score = self.updater.programs(group)
    batch = self._advantages(rollout, padded_rewards, n, score)
    # The update is dispatched asynchronously: its clock stops once its results are
    # on the host, or it would time the dispatch and not the work.
    metrics = jax.device_get(self._update(batch, rows, seed, update, group))
    t_update = time.perf_counter()

    stats = {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]}
    for key, value in stats.items():
      if not math.isfinite(value):
        raise FloatingPointError(f"RLTrainer step {int(self.state.step)}: {key}={value}; "
                                 f"lower RLConfig.learning_rate (now {cfg.learning_rate})")
    lengths = [len(c.tokens) for c in completions]
    stats.update(
        reward_mean=float(rewards.mean()), reward_std=float(rewards.std()),
        kl=stats.get("kl"),       # mean over the updates; None with kl_coef=0 (not computed)
        completion_tokens=int(sum(lengths)), completion_length=float(np.mean(lengths)),
        prompt_tokens=int(sum(c.prompt_tokens for c in completions)),
        updates=len(metrics), optimizer_step=int(self.state.step),
        seconds=t_update - t0, sample_seconds=t_sample - t0,
        reward_seconds=t_reward - t_sample, update_seconds=t_update - t_reward)
    stats.pop("tokens", None)
    return stats

  def _prompt_group(self, rollout: dict) -> int:
    """Rows per shared prompt in the passes: the group size where sharing is on and
    every micro-batch's rows on every device hold whole groups, else 1."""
    cfg, g = self.config, self.config.group_size
    rows = len(rollout["prompt_ids"])
    per_device = rows // (cfg.minibatches * cfg.accum_steps * self.updater.devices)
    if not cfg.share_prompts or per_device % g:
      return 1
    for key in ("prompt_ids", "prompt_mask"):   # rows are built so: a broken run is a bug
      runs = rollout[key].reshape(rows // g, g, -1)
      if not (runs == runs[:, :1]).all():
        raise AssertionError(f"rollout {key}: a group's rows differ; cannot share prompts")
    return g

  def _advantages(self, rollout: dict, rewards: np.ndarray, n: int, score) -> dict:
    """Adds ref log-probs and per-token advantages (and PPO returns/features)."""
    cfg = self.config
    batch = dict(rollout)
    needs_score = cfg.kl_coef > 0 or cfg.algorithm == "ppo"
    if needs_score:
      scored = score(self.base_on_mesh, self.state.trainable,
                     to_global(rollout, self.updater.rows))
      batch.update(to_host(scored))
    mask = rollout["completion_mask"]
    if cfg.algorithm == "grpo":
      seq = np.zeros_like(rewards)
      seq[:n] = _group_advantages(rewards[:n], cfg.group_size, cfg.advantage_eps)
      batch["advantages"] = seq[:, None] * mask
    else:
      adv, returns = _ppo_advantages(rewards, batch.pop("values"), mask, cfg.gamma, cfg.lam)
      batch["advantages"], batch["returns"] = np.asarray(adv), np.asarray(returns)
    return batch

  def _update(self, batch: dict, rows: int, seed: int, update, group: int) -> list:
    """``inner_epochs`` x ``minibatches`` jitted updates; device metrics per update.

    Shuffles whole groups when they share their prompt (``group`` > 1), rows else.
    """
    cfg = self.config
    shuffle = np.random.default_rng([seed, int(self.state.step)])
    size = rows // cfg.minibatches
    metrics = []
    for _ in range(cfg.inner_epochs):
      order = shuffle.permutation(rows // group)
      order = (order[:, None] * group + np.arange(group)).reshape(-1)
      for k in range(cfg.minibatches):
        idx = order[k * size:(k + 1) * size]
        mb = {key: v[idx].reshape((cfg.accum_steps, size // cfg.accum_steps) + v.shape[1:])
              for key, v in batch.items()}
        mb = to_global(mb, self.updater.micro_rows)
        self.state, m = update(self.state, mb, self.base_on_mesh)
        metrics.append(m)
    return metrics
