"""Defaults shared by every experiment (one place, not scattered .get() calls)."""

import dataclasses

import ml_collections

from optimas_jax.lrf.config import default_lrf_config
from optimas_jax.optimize import policy as policy_lib
from optimas_jax.rl import config as rl_config


def parse_args(arg, known: tuple[str, ...], file: str) -> set[str]:
  """The comma-separated `:args` of an experiment file; unknown ones are an error."""
  args = {a for a in (arg or "").split(",") if a}
  unknown = sorted(args - set(known))
  if unknown:
    raise ValueError(f"{file}: unknown config arg(s) {unknown}; known: {sorted(known)} "
                     f"(e.g. --config={file}:{known[0]})")
  return args


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.job = ""
  config.seed = 0
  return config


def optimas_config() -> ml_collections.ConfigDict:
  """The Optimas loop's defaults (paper / reference values noted where they differ)."""
  config = base_config()
  config.job = "optimas"
  config.method = "optimas"          # optimas | optimas_static | coordinate | unoptimized
  config.task = ""
  config.init_from = ""              # DIR or DIR/checkpoints/<step>: fork a run
  # The arms `python -m optimas_jax.compare` runs (optimas_jax/methods/compare.py):
  # dict(name=, method=, overrides={"dotted.field": value}); empty: --methods names them.
  config.arms = ()

  # Where system runs and Monte-Carlo rollouts run (optimas_jax/system/runners.py):
  # local (this process; a multi-process JAX run splits them across its
  # processes) or ray (actors on a Ray cluster; the `ray` extra). Same results.
  config.execution = ml_collections.ConfigDict(dict(
      backend="local",               # local | ray
      ray_address="",                # "": start a local cluster on loopback
      ray_actors=2,                  # actors, each with its own copy of the system
      ray_cpus_per_actor=1.0,
  ))

  config.collect = ml_collections.ConfigDict(dict(
      num_candidates=4,              # n re-samples per input (dedupe after)
      num_rollouts=3,                # m Monte-Carlo rollouts (reference: 3)
      initial_examples=20,           # inputs for the initial collection
      cache=True,                    # SQLite rollout cache in the workdir
  ))

  lrf = default_lrf_config()
  lrf.list_items = "full"            # full | first_sentence (see lrf.rewards.render_value)
  lrf.optim.schedule = "constant"
  lrf.optim.lr = 3e-4
  lrf.initial_epochs = 6
  lrf.online_epochs = 1              # reference: 1 epoch per online update
  lrf.replay_pairs = 100             # reference: 100 pairs per component
  lrf.update_pairs = 128             # reference: 128 pairs per update
  config.lrf = lrf

  config.loop = ml_collections.ConfigDict(dict(
      iterations=10,                 # reference library default: 10
      examples_per_iteration=20,     # paper: gains plateau beyond ~20
      selection="uniform",           # uniform (paper) | gap_softmax (reference) | round_robin
      selection_temperature=1.0,
      cooldown=1,
      val_repeats=0,                 # 0: 1 pass if the system is deterministic, else 2
      # The gate (loop/gate.py): paired on the validation examples, exact by default.
      gate="exact",                  # exact | sign | paired_bootstrap | mean
      gate_confidence=0.9,           # 1 - the run's chance of keeping a change no better
      gate_spending="series",        # series (alpha/(k(k+1)) at gate k) | bonferroni | none
      gate_resamples=2000,
      min_gain=1e-9,                 # and the mean must improve by at least this
      test_repeats=1,
      budget_runs=0,                 # stop exactly at this many system runs (0: no cap)
      monitor_alignment=False,       # static LRF: measure alignment on fresh pairs (unbudgeted)
  ))

  config.optimizers = ml_collections.ConfigDict(dict(
      search_budget=8,
      prompt_llm_proposals=2,        # OPRO proposals per step (reference: 3)
      prompt_edit_proposals=3,
      perturb_scale=0.3,             # coordinate search's parameter perturbation
  ))
  # A ranking policy's local step: optimize/policy.py's PolicyConfig (its defaults).
  config.optimizers.policy = ml_collections.ConfigDict(
      dataclasses.asdict(policy_lib.PolicyConfig()))
  # RL of an LLM component's LoRA adapter (rl/; a TextPolicy component): each
  # local step runs `steps` RL steps of `prompts` inputs x `group_size` samples.
  # algorithm (grpo | ppo), group_size, inner_epochs, learning_rate, kl_coef,
  # clip_eps, temperature: rl/config.py's RLConfig fields and defaults.
  config.optimizers.rl = ml_collections.ConfigDict(dict(
      steps=4,
      prompts=4,
      metric_rollouts=1,             # true-metric reward: Monte-Carlo rollouts per sample
      **rl_config.experiment_defaults(),
  ))
  return config


def use_minilm_lrf(config, max_len: int, buckets: tuple[int, ...]) -> None:
  """The task experiments' LRF: MiniLM with its top layer trained, groups of up to 4."""
  config.lrf.backbone = "minilm"
  config.lrf.trainable = "top"
  config.lrf.top_layers = 1
  config.lrf.max_len = max_len
  config.lrf.buckets = buckets
  config.lrf.groups_per_batch = 8
  config.lrf.max_candidates = 4


def rl_arms(variable_field: str) -> tuple[dict, ...]:
  """The RL comparison's arms: the LoRA policy against the LRF (Optimas) and against the
  true metric (coordinate), the same component as a prompt under Optimas, unoptimized."""
  return (dict(name="rl_lrf", method="optimas"),
          dict(name="rl_metric", method="coordinate"),
          dict(name="prompt_lrf", method="optimas", overrides={variable_field: "prompt"}),
          dict(name="unoptimized", method="unoptimized"))


def use_rl_cpu_sizes(config) -> None:
  """The RL comparisons' 2-core CPU sizes: per local step 2 RL steps of 2 prompts x 4
  samples, one inner epoch; the prompt arm gets 1 LLM proposal and 3 edits."""
  config.optimizers.rl.steps = 2
  config.optimizers.rl.prompts = 2
  config.optimizers.rl.group_size = 4
  config.optimizers.rl.inner_epochs = 1
  config.optimizers.rl.learning_rate = 5e-4    # few steps on CPU: a larger step than usual
  config.optimizers.rl.kl_coef = 0.02
  config.optimizers.prompt_llm_proposals = 1
  config.optimizers.prompt_edit_proposals = 3


def use_llm_smoke_sizes(config, train: int, val: int, test: int, examples: int = 3) -> None:
  """The `:smoke` sizes of the LLM task experiments: two iterations of `examples`
  examples, two candidates, one LRF epoch, one prompt edit, no LLM proposal."""
  config.data.limit = dict(train=train, val=val, test=test)
  config.collect.initial_examples = examples
  config.collect.num_candidates = 2
  config.loop.iterations = 2
  config.loop.examples_per_iteration = examples
  config.lrf.initial_epochs = 1
  config.optimizers.search_budget = 2
  config.optimizers.prompt_llm_proposals = 0
  config.optimizers.prompt_edit_proposals = 1
