"""PubMedQA (expert-labelled yes/no/maybe) with Optimas.

  python -m optimas_jax.main --config=experiments/pubmedqa.py \\
    --config.data.path=../shared/data/pubmedqa --workdir=runs/pubmedqa

The paper's system: context_model_selector -> context_analyst (prompt) ->
solver_model_selector -> problem_solver (prompt); accuracy of the final
"Answer: yes|no|maybe" line. Local models: SmolLM2-135M-Instruct (free text),
"minilm-extract" (analyst: the 3 context sentences closest to the question)
and "smollm2-135m-instruct:choice" (solver: likelihood of each label).
On 2 CPU cores the local run uses the first 60 / 24 / 100 train / val / test
rows (config.data.limit; 0 = all). Args: `:smoke`, `:api` (the paper's
models, all splits; $OPENAI_API_KEY, $ANTHROPIC_API_KEY).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)

from optimas_jax.llm import factory  # noqa: E402

LOCAL_LLM = "smollm2-135m-instruct"
# The reference's model selection set.
API_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-0125", "gpt-4-turbo",
              "claude-3-5-haiku-20241022", "claude-3-5-sonnet-20241022",
              "claude-3-7-sonnet-20250219")


def get_config(arg=None):
  args = common.parse_args(arg, ('api', 'smoke'), "experiments/pubmedqa.py")
  config = common.optimas_config()
  config.task = "pubmedqa"
  config.data = dict(name="pubmedqa", path="", on_error="raise",
                     limit=dict(train=60, val=24, test=100))
  config.llm = factory.local_config(LOCAL_LLM)
  config.system = dict(
      context_models=(LOCAL_LLM, "minilm-extract"),
      solver_models=(LOCAL_LLM, LOCAL_LLM + ":choice"),
      analyst_tokens=64, solver_tokens=32,
      analyst_temperature=0.0,           # reference: 0 (greedy) for both LLM steps
      proposer="",                       # prompt-proposal LLM ("" = config.llm.model)
      cache_dir=os.path.expanduser("~/.cache/optimas_jax"))
  config.collect.num_candidates = 3
  config.collect.num_rollouts = 1        # greedy steps: one rollout is exact
  config.collect.initial_examples = 12
  common.use_minilm_lrf(config, max_len=384, buckets=(128, 256, 384))
  config.loop.iterations = 4
  config.loop.examples_per_iteration = 12
  config.loop.selection = "round_robin"
  config.optimizers.search_budget = 3
  config.optimizers.prompt_llm_proposals = 1
  config.optimizers.prompt_edit_proposals = 2
  if "smoke" in args:
    common.use_llm_smoke_sizes(config, train=6, val=4, test=4)
    config.system.analyst_tokens = 16
    config.system.solver_tokens = 12
  if "api" in args:
    config.llm = factory.api_config("gpt-4o-mini")
    config.data.limit = dict(train=0, val=0, test=0)
    config.system.context_models = API_MODELS
    config.system.solver_models = API_MODELS
    config.system.analyst_tokens = 1024
    config.system.solver_tokens = 1024
  return config
