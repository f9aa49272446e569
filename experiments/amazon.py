"""Amazon next-item selection (KDD Cup 2024 ShopBench) with Optimas, locally.

  python -m optimas_jax.main --config=experiments/amazon.py \\
    --config.data.path=../shared/data/amazon/session_based_next_item_selection_dataset.csv \\
    --workdir=runs/amazon

Components: session_analyzer (pooling hyperparameters) -> candidate_profiler
(Flax policy over MiniLM similarity features, trained against its LRF) ->
next_item_decider (decision rule). Metric: accuracy on the reference's split
(file 80/20 -> train+val / test, then 85/15 -> train / val).
Args: `:smoke` (tests), `:api` (the paper's LLM decider, gpt-4o-mini, with a
prompt; needs $OPENAI_API_KEY or an OpenAI-compatible $OPENAI_BASE_URL).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)

from optimas_jax.llm import factory  # noqa: E402


def get_config(arg=None):
  args = common.parse_args(arg, ('api', 'smoke'), "experiments/amazon.py")
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
  config.optimizers.policy_steps = 60
  config.optimizers.policy_group = 4
  if "smoke" in args:
    config.collect.initial_examples = 8
    config.loop.iterations = 3
    config.loop.examples_per_iteration = 6
    config.lrf.initial_epochs = 1
    config.optimizers.search_budget = 3
    config.optimizers.policy_steps = 5
  if "api" in args:
    config.system.llm_decider = True
    config.llm = factory.api_config("gpt-4o-mini")
  return config
