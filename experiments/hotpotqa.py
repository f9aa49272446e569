"""HotpotQA (distractor setting) with Optimas.

  python -m optimas_jax.main --config=experiments/hotpotqa.py \\
    --config.data.path=../shared/data/hotpotqa/hotpotqa_distractor_sample.jsonl \\
    --workdir=runs/hotpotqa

The paper's five components: question_rewriter -> info_extractor ->
retriever (k over the question's own 10 paragraphs) -> hint_generator ->
answer_generator. Metric: token F1. The 100-question sample is the
reference's test set; to optimize at all, the local run carves train / val off
its head in file order (30 / 20), testing on the other 50 (so its numbers do
not compare one-to-one with the paper's 100-question test). Args: `:smoke`,
`:api` (gpt-4o-mini at temperature 0.6, as the reference).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)

from optimas_jax.llm import factory  # noqa: E402


def get_config(arg=None):
  args = common.parse_args(arg, ('api', 'smoke'), "experiments/hotpotqa.py")
  config = common.optimas_config()
  config.task = "hotpotqa"
  config.data = dict(name="hotpotqa", path="", on_error="raise", train_fraction=0.3,
                     val_fraction=0.2, limit=dict(train=0, val=0, test=0))
  config.llm = factory.local_config("smollm2-135m-instruct")
  config.system = dict(temperature=0.6,   # reference: 0.6 for every LLM step
                       max_tokens=dict(rewrite=32, keywords=16, hints=48, answer=16),
                       proposer="")
  config.collect.num_candidates = 3
  config.collect.num_rollouts = 1
  config.collect.initial_examples = 8
  # k=10 retrievals render to ~410 tokens even as first sentences; MiniLM reads 512.
  common.use_minilm_lrf(config, max_len=512, buckets=(128, 256, 384, 512))
  config.lrf.list_items = "first_sentence"
  config.loop.iterations = 5
  config.loop.examples_per_iteration = 8
  config.loop.selection = "round_robin"
  config.optimizers.search_budget = 4
  config.optimizers.prompt_llm_proposals = 1
  config.optimizers.prompt_edit_proposals = 2
  if "smoke" in args:
    common.use_llm_smoke_sizes(config, train=4, val=3, test=3)
    config.system.max_tokens = dict(rewrite=8, keywords=6, hints=8, answer=6)
  if "api" in args:
    config.llm = factory.api_config("gpt-4o-mini")
    config.system.max_tokens = dict(rewrite=1024, keywords=1024, hints=1024, answer=1024)
  return config
