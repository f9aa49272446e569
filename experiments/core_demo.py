"""Core demo: a 3-component geography QA system run end to end (no weights).

  python -m optimas_jax.main --config=experiments/core_demo.py --workdir=runs/core_demo

`:smoke` shrinks it for tests.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (config files are loaded by path, not as a package)


def get_config(arg=None):
  config = common.base_config()
  config.job = "core_demo"
  args = common.parse_args(arg, ("smoke",), "experiments/core_demo.py")
  config.num_examples = 20 if "smoke" in args else 150
  return config
