"""STaRK (the paper's STaRK-Prime system) with Optimas, offline over a GeoNames KB.

  python -m optimas_jax.main --config=experiments/stark.py --workdir=runs/stark

The paper's system: relation_scorer (prompt) and text_scorer (prompt) score
each query's candidate entities; final_scorer adds them to the first-stage
similarity with two weights (hyperparameters). Metric: MRR (Hit@1,
Recall@20 beside it). STaRK's knowledge base cannot be downloaded here, so
the default reranks MiniLM's top candidates over a relational KB built from
GeoNames (countries, cities, currencies, continents), with questions that
need a relation and a property. The scorers are SmolLM2-135M likelihoods of
" Yes" (deterministic, memoised). The defaults cost about 1,000 SmolLM2
forward passes of ~100 tokens (19 CPU-minutes; 45 minutes on a shared 2-core
machine). Args: `:smoke` (~4 CPU-minutes), `:release` (a stark-qa release folder:
--config.data.path=DIR holding stark_qa/stark_qa.csv, split/*.index and the
reference's processed/filtered_<split>_ids.json; see tasks/stark/release.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)

from optimas_jax.llm import factory  # noqa: E402


def get_config(arg=None):
  args = common.parse_args(arg, ("smoke", "release"), "experiments/stark.py")
  config = common.optimas_config()
  config.task = "stark"
  config.data = dict(
      source="geonames",                 # geonames (offline) | release (config.data.path)
      path="", on_error="raise",
      train=16, val=10, test=20, seed=0, # geonames questions per split (fixed by seed)
      num_candidates=5,                  # first-stage candidates reranked (reference: 5)
      force_gold=False,                  # reference: a gold answer always among the candidates
      limit=dict(train=0, val=0, test=0))  # release: first N queries per split (0: all)
  config.llm = factory.local_config("smollm2-135m-instruct")
  config.system = dict(
      scorer_model="",                   # "" = config.llm.model
      max_info_chars=400,                # per candidate (the reference truncates at 1,024)
      relation_weight=0.1, text_weight=0.1,   # the reference's initial weights
      weight_range=(0.0, 1.0),           # search space of both (reference: [0.1, 1.0])
      proposer="",                       # prompt-proposal LLM ("" = config.llm.model)
      cache_dir=os.path.expanduser("~/.cache/optimas_jax"))
  config.collect.num_candidates = 3      # current prompt + 2 hinted variants per scorer
  config.collect.num_rollouts = 1        # every step is deterministic
  config.collect.initial_examples = 8
  common.use_minilm_lrf(config, max_len=384, buckets=(128, 256, 384))
  config.lrf.list_items = "first_sentence"
  config.loop.iterations = 4
  config.loop.examples_per_iteration = 6
  config.loop.selection = "round_robin"
  config.optimizers.search_budget = 6
  config.optimizers.prompt_llm_proposals = 1
  config.optimizers.prompt_edit_proposals = 2
  if "smoke" in args:
    config.data.update(dict(train=3, val=2, test=3))
    config.collect.num_candidates = 2
    config.collect.initial_examples = 2
    config.lrf.max_len = 256
    config.lrf.buckets = (128, 256)
    config.lrf.initial_epochs = 1
    config.loop.iterations = 3           # one turn each: relation, text, final scorer
    config.loop.examples_per_iteration = 2
    config.optimizers.search_budget = 4
    config.optimizers.prompt_llm_proposals = 0
    config.optimizers.prompt_edit_proposals = 1
  if "release" in args:
    config.data.source = "release"
    config.data.limit = dict(train=40, val=12, test=40)
    config.system.max_info_chars = 600
  return config
