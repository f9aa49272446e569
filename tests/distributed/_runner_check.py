"""One process of a multi-process system run (tests/distributed/test_system_runs.py):
the runner system's run and rollouts, split across the processes (ProcessRunner)."""

import json
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
address, count, index, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
jax.distributed.initialize(address, num_processes=count, process_id=index,
                           initialization_timeout=60)

from optimas_jax.system import runners  # noqa: E402
from tests.system import runner_system  # noqa: E402

system = runner_system.build()
system.runner = runners.ProcessRunner()
record = runner_system.records(system)
record["own_drafts"] = runner_system.OWN_DRAFTS
with open(f"{out}.{index}", "w") as f:
  json.dump(record, f)
