"""Any task's experiment with the peers' settings exposed (DSPy, GEPA, TextGrad).

  python -m optimas_jax.compare --config=experiments/peers.py:pubmedqa,smoke \
      --workdir=runs/peers_pubmedqa --seeds=0,1,2 \
      --methods=unoptimized,mipro_instructions,mipro,gepa,textgrad,optimas \
      --config.peers.max_wall_s=1800

The first arg names the experiment file (geoqa, pubmedqa, hotpotqa, code,
...: experiments/<name>.py); the rest are that file's own args. The task
and loop are exactly that experiment's; `config.peers` adds the peers' knobs
(optimas_jax/peers/settings.py, PeerSettings) so they can be overridden
from the command line. Needs the `peers` extra.
"""

import dataclasses
import importlib.util
import os
import sys

import ml_collections

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)


def with_peers(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` plus ``config.peers`` at the PeerSettings defaults."""
  from optimas_jax.peers.settings import PeerSettings
  config.peers = ml_collections.ConfigDict(dataclasses.asdict(PeerSettings()))
  return config


def get_config(arg=None):
  name, _, rest = (arg or "").partition(",")
  known = sorted(f[:-3] for f in os.listdir(HERE)
                 if f.endswith(".py") and f not in ("common.py", "peers.py", "peers_geoqa.py"))
  if name not in known:
    raise ValueError(f"experiments/peers.py: first arg {name!r} is not an experiment; "
                     f"known: {known} (e.g. --config=experiments/peers.py:pubmedqa,smoke)")
  # By path, not by module name: experiments/code.py would meet the stdlib's `code`.
  spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return with_peers(module.get_config(rest or None))
