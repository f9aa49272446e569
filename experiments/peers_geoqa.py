"""GeoQA with the peers' settings exposed: the comparison against DSPy, GEPA and TextGrad.

  python -m optimas_jax.compare --config=experiments/peers_geoqa.py:smoke --workdir=runs/peers_smoke \
      --seeds=0 --methods=unoptimized,mipro_instructions,mipro,gepa,textgrad,optimas

The task and loop are exactly experiments/geoqa.py (same args: `:smoke`);
`config.peers` holds the peers' knobs (optimas_jax/peers/baselines.py,
PeerSettings), so they can be overridden from the command line, e.g.
`--config.peers.max_wall_s=2400`. Needs the `peers` extra.
"""

import dataclasses
import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(__file__))
import geoqa  # noqa: E402  (config files are loaded by path, not as a package)


def get_config(arg=None):
  from optimas_jax.peers.baselines import PeerSettings
  config = geoqa.get_config(arg)
  config.peers = ml_collections.ConfigDict(dataclasses.asdict(PeerSettings()))
  return config
