"""Amazon next-item selection (KDD Cup 2024 ShopBench) with Optimas, locally.

  python -m optimas_jax.main --config=experiments/amazon.py \\
    --config.data.path=../shared/data/amazon/session_based_next_item_selection_dataset.csv \\
    --workdir=runs/amazon

Components: session_analyzer (pooling hyperparameters) -> candidate_profiler
(Flax policy over MiniLM similarity features, trained against its LRF) ->
next_item_decider (decision rule). Metric: accuracy on the reference's split
(file 80/20 -> train+val / test, then 85/15 -> train / val).
Args: `:smoke` (tests), `:api` (the paper's LLM decider, gpt-4o-mini, with a
prompt; needs $OPENAI_API_KEY or an OpenAI-compatible $OPENAI_BASE_URL),
`:llm` (the paper's shape: session analyzer and candidate profiler are
SmolLM2-135M LoRA policies trained by RL against their LRFs,
tasks/amazon/llm_system.py; sized for a 2-core CPU, raise data.max_* and
optimizers.rl.* on a GPU; `--config.system.policy_variable=prompt` makes the
two stages' prompts the variables instead, the comparison's prompt arm;
`python -m optimas_jax.compare --config=experiments/amazon.py:llm ...` runs the
four arms of config.arms).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)

from optimas_jax.llm import factory  # noqa: E402


def get_config(arg=None):
  args = common.parse_args(arg, ('api', 'smoke', 'llm'), "experiments/amazon.py")
  config = common.optimas_config()
  config.task = "amazon"
  config.data = dict(name="amazon", path="", on_error="raise")
  config.system = dict(llm_decider=False, cache_dir=os.path.expanduser("~/.cache/optimas_jax"))
  config.llm = factory.local_config()
  config.collect.num_candidates = 4
  config.collect.num_rollouts = 1        # every component is deterministic
  config.collect.initial_examples = 60
  common.use_minilm_lrf(config, max_len=512, buckets=(256, 384, 512))
  config.lrf.initial_epochs = 8
  config.loop.iterations = 9
  config.loop.examples_per_iteration = 40
  config.loop.selection = "round_robin"
  config.optimizers.policy.steps = 60
  config.optimizers.policy.group_size = 4
  if "smoke" in args:
    config.collect.initial_examples = 8
    config.loop.iterations = 3
    config.loop.examples_per_iteration = 6
    config.lrf.initial_epochs = 1
    config.optimizers.search_budget = 3
    config.optimizers.policy.steps = 5
    # One LRF shape: each bucket compiles MiniLM's scoring and update (388 s -> 120 s
    # for this smoke on the loaded 2 cores).
    common.use_minilm_lrf(config, max_len=256, buckets=(256,))
  if "llm" in args:
    config.task = "amazon_llm"
    # 2-core CPU sizes (the README's comparison); raise them by flags on a GPU.
    # The reference's split, whole validation (15) and test (24); 0: all of it.
    config.data.max_train, config.data.max_val, config.data.max_test = 48, 0, 0
    config.system = dict(llm="smollm2-135m-instruct", llm_dtype="float32", lora_rank=8,
                         lora_alpha=16.0, lora_targets=("q_proj", "v_proj"),
                         analyzer_tokens=16, profiler_tokens=4, propose_temperature=1.0,
                         policy_variable="lora", session_items=3, title_chars=60,
                         cache_dir=config.system.cache_dir)
    config.collect.initial_examples = 8
    common.use_minilm_lrf(config, max_len=256, buckets=(128, 256))
    config.lrf.initial_epochs = 4
    config.loop.iterations = 2
    config.loop.examples_per_iteration = 6
    common.use_rl_cpu_sizes(config)
    config.arms = common.rl_arms("system.policy_variable")
    if "smoke" in args:
      config.data.max_train, config.data.max_val, config.data.max_test = 8, 4, 4
      config.collect.initial_examples = 4
      config.loop.iterations = 2
      config.loop.examples_per_iteration = 4
      config.lrf.initial_epochs = 1
      config.optimizers.rl.steps = 1
      config.optimizers.rl.prompts = 2
      config.optimizers.rl.group_size = 2
      config.optimizers.rl.inner_epochs = 1
      config.optimizers.prompt_llm_proposals = 0
      config.optimizers.prompt_edit_proposals = 2
  if "api" in args:
    config.system.llm_decider = True
    config.llm = factory.api_config("gpt-4o-mini")
  return config
