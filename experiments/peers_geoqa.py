"""GeoQA with the peers' settings exposed: the comparison against DSPy, GEPA and TextGrad.

  python -m optimas_jax.compare --config=experiments/peers_geoqa.py:smoke --workdir=runs/peers_smoke \
      --seeds=0 --methods=unoptimized,mipro_instructions,mipro,gepa,textgrad,optimas

The same config as `experiments/peers.py:geoqa,<args>` (kept: the README's
GeoQA table was run with this file). Needs the `peers` extra.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import geoqa  # noqa: E402  (config files are loaded by path, not as a package)
import peers  # noqa: E402


def get_config(arg=None):
  return peers.with_peers(geoqa.get_config(arg))
