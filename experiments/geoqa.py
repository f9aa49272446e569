"""GeoQA: Optimas on a 4-component geography QA system over real GeoNames facts.

  python -m optimas_jax.main --config=experiments/geoqa.py --workdir=runs/geoqa

Components: query_writer (SmolLM2-135M, prompt) -> retriever (BM25/dense/
hybrid, k: hyperparameters) -> evidence_selector (Flax policy over MiniLM
features: parameters) -> answerer (SmolLM2 reader or fact reader: model
choice). Metric: token F1. Args: `:smoke` (tests, ~2 min), `:tools` (no LLM:
the writer copies the question; for fast checks).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)


def get_config(arg=None):
  args = common.parse_args(arg, ('smoke', 'tools'), "experiments/geoqa.py")
  config = common.optimas_config()
  config.task = "geoqa"
  config.data = dict(train=40, val=16, test=40, seed=0)
  config.system = dict(llm="smollm2-135m-instruct", llm_dtype="float32",
                       writer_temperature=0.7, cache_dir=os.path.expanduser("~/.cache/optimas_jax"))
  config.collect.num_candidates = 4
  config.collect.num_rollouts = 2
  config.collect.initial_examples = 16
  config.lrf.backbone = "minilm"
  config.lrf.trainable = "top"
  config.lrf.top_layers = 1
  config.lrf.list_items = "first_sentence"
  config.lrf.max_len = 256
  config.lrf.buckets = (64, 128, 256)
  config.lrf.groups_per_batch = 8
  config.lrf.max_candidates = 4
  config.loop.iterations = 6
  config.loop.examples_per_iteration = 8
  config.loop.selection = "round_robin"
  if "smoke" in args:
    config.data = dict(train=12, val=8, test=12, seed=0)
    config.collect.initial_examples = 6
    config.loop.iterations = 4
    config.loop.examples_per_iteration = 6
    config.lrf.initial_epochs = 2
    config.optimizers.search_budget = 4
    config.optimizers.policy.steps = 10
    config.optimizers.prompt_llm_proposals = 1
    config.optimizers.prompt_edit_proposals = 2
  if "tools" in args:
    config.system.llm = ""
  return config
