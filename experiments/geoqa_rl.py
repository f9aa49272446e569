"""GeoQA-hop: an LLM query writer trained by RL against its local reward.

  python -m optimas_jax.main --config=experiments/geoqa_rl.py --workdir=runs/geoqa_rl
  python -m optimas_jax.compare --config=experiments/geoqa_rl.py --workdir=runs/rl_compare \
      --seeds=0,1,2      # the four arms of config.arms (common.rl_arms), at equal budget

The system (tasks/geo/hop.py): hop_retriever -> query_writer (SmolLM2-135M
with a LoRA adapter: the component's model parameters) -> retriever (BM25
over the query alone) -> answerer. Only the query writer's text decides the
answer. Methods: `optimas` trains the adapter by GRPO against the LRF;
`coordinate` by GRPO against the true metric (each sample scored by running
the downstream components, counted in the budget). Args: `:prompt` makes
the writer's prompt the variable instead (prompt optimization of the same
component), `:smoke` the sizes of the tests, `:ppo` the paper's PPO, `:gpu` one
accelerator's sizes (bfloat16 writer, 4x the data, 8 RL steps of 8 prompts x 8).

Sizes are for a 2-core CPU (see README); on a GPU raise data.*,
loop.iterations, optimizers.rl.* by flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)


def get_config(arg=None):
  args = common.parse_args(arg, ("smoke", "prompt", "ppo", "gpu"), "experiments/geoqa_rl.py")
  config = common.optimas_config()
  config.task = "geoqa_hop"
  # 2-core CPU sizes (the README's comparison); raise them by flags on a GPU.
  config.data = dict(train=24, val=16, test=32, seed=0)
  config.system = dict(llm="smollm2-135m-instruct", llm_dtype="float32",
                       writer_variable="prompt" if "prompt" in args else "lora",
                       max_new_tokens=12, propose_temperature=1.0,
                       lora_rank=8, lora_alpha=16.0, lora_targets=("q_proj", "v_proj"))
  config.collect.num_candidates = 4
  config.collect.num_rollouts = 1             # the downstream components are deterministic
  config.collect.initial_examples = 8
  common.use_minilm_lrf(config, max_len=128, buckets=(64, 128))
  config.loop.iterations = 2
  config.loop.examples_per_iteration = 4
  config.loop.selection = "round_robin"
  common.use_rl_cpu_sizes(config)
  config.arms = common.rl_arms("system.writer_variable")
  if "ppo" in args:
    config.optimizers.rl.algorithm = "ppo"
  if "gpu" in args:
    config.data = dict(train=96, val=48, test=128, seed=0)
    config.system.llm_dtype = "bfloat16"
    config.collect.initial_examples = 24
    config.loop.iterations = 6
    config.loop.examples_per_iteration = 8
    config.optimizers.rl.steps = 8
    config.optimizers.rl.prompts = 8
    config.optimizers.rl.group_size = 8
    config.optimizers.rl.inner_epochs = 2
  if "smoke" in args:
    config.data = dict(train=8, val=6, test=6, seed=0)
    config.collect.initial_examples = 4
    config.loop.iterations = 1
    config.loop.examples_per_iteration = 4
    config.lrf.initial_epochs = 2
    config.optimizers.rl.steps = 2
    config.optimizers.rl.prompts = 2
    config.optimizers.rl.group_size = 2
    config.optimizers.rl.inner_epochs = 1
    config.optimizers.prompt_llm_proposals = 0
    config.optimizers.prompt_edit_proposals = 2
  return config
