"""The device mesh the LRF trainer and the RL updater share."""

import jax
import numpy as np
from jax.sharding import Mesh


def make_mesh() -> Mesh:
  """A 1-D ("data",) mesh over every device (batches split, parameters replicated)."""
  return Mesh(np.array(jax.devices()), ("data",))
