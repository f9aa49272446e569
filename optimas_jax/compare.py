"""Entry point: methods side by side at equal budget (optimas_jax/methods/compare.py).

  python -m optimas_jax.compare --config=experiments/geoqa.py --workdir=runs/compare \
      --methods=unoptimized,coordinate,optimas_static,optimas --seeds=0,1,2
  python -m optimas_jax.compare --config=experiments/geoqa_rl.py --workdir=runs/rl --seeds=0
      # the arms the experiment file names (config.arms)
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from optimas_jax.methods import compare
from optimas_jax.core.mesh import is_writer
from optimas_jax.runtime import QuietLibraries, configure_process, init_distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root folder of all runs and the report.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each changes the run's randomness).")
_METHODS = flags.DEFINE_list(
    "methods", [], "Methods to compare when the experiment file sets no config.arms "
    "(default: unoptimized,coordinate,optimas_static,optimas); optimas runs first to set "
    "the budget.")
_BUDGET = flags.DEFINE_integer(
    "budget_runs", 0,
    "Cap EVERY iterating arm, the first one too, at this many system runs (each then loses "
    "the iteration its cap cuts, alike). 0: the first iterating arm runs its iterations "
    "uncapped and its spend caps the rest (only the capped arms lose a cut iteration: "
    "summary.json's cut_iteration_runs says how much).")
flags.mark_flags_as_required(["config", "workdir"])

DEFAULT_METHODS = ["unoptimized", "coordinate", "optimas_static", "optimas"]


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(QuietLibraries())
  logging.info("host memory: %s", configure_process())
  init_distributed()
  config = _CONFIG.value
  root = pathlib.Path(_WORKDIR.value)
  root.mkdir(parents=True, exist_ok=True)
  methods = _METHODS.value or (None if config.get("arms") else DEFAULT_METHODS)
  results = compare.run_all(config, root, _SEEDS.value, methods, budget_runs=_BUDGET.value)
  if is_writer():
    command = "python -m optimas_jax.compare " + " ".join(sys.argv[1:])
    print(compare.write_report(results, root, command, config.task))
    print(compare.plot(results, root))


if __name__ == "__main__":
  app.run(main)
