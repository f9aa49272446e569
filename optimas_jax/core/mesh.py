"""The device mesh the LRF trainer and the RL updater share, and how host data joins it.

One process or many (`jax.distributed`): every process builds the same host
batch from the same plan and seeds, and `to_global` hands each process's
devices their own slices of it (`jax.make_array_from_callback`), so a global
array never has to be assembled on one host and a program's result does not
depend on how many processes feed it.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding


def is_writer() -> bool:
  """Only process 0 writes metrics, configs, reports and summaries (checkpoints are
  written by every process together, through Orbax)."""
  return jax.process_index() == 0


def make_mesh() -> Mesh:
  """A 1-D ("data",) mesh over every device of every process (batches split,
  parameters replicated)."""
  return Mesh(np.array(jax.devices()), ("data",))


def _leaf_to_global(x, sharding: NamedSharding):
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  host = np.asarray(x)              # this process's full copy (same on every process)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_global(tree, sharding: NamedSharding):
  """`tree`'s leaves as global arrays with `sharding`, fed by every process."""
  return jax.tree.map(lambda x: _leaf_to_global(x, sharding), tree)


def to_host(tree):
  """`tree`'s leaves as host numpy arrays; a leaf sharded across processes is gathered
  (every process gets the whole array, in order)."""
  def leaf(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(leaf, tree)
