"""The device mesh the LRF trainer and the RL updater share, and how host data joins it.

One process or many (`jax.distributed`): every process builds the same host
batch from the same plan and seeds, and `to_global` hands each process's
devices their own slices of it (`jax.make_array_from_callback`), so a global
array never has to be assembled on one host and a program's result does not
depend on how many processes feed it.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def is_writer() -> bool:
  """Only process 0 writes metrics, configs, reports and summaries (checkpoints are
  written by every process together, through Orbax)."""
  return jax.process_index() == 0


def make_mesh(fsdp: int = 1) -> Mesh:
  """A ("data", "fsdp") mesh over every device of every process.

  Batches are split over both axes (every device gets its own rows); a
  parameter, its gradient and its optimizer moments are split over "fsdp"
  (`fsdp_shardings`) and gathered where a step needs them. fsdp=1 is plain
  data parallelism (parameters replicated).
  """
  devices = np.array(jax.devices())
  if fsdp < 1 or devices.size % fsdp:
    raise ValueError(f"fsdp={fsdp}: use a divisor of the {devices.size} devices")
  return Mesh(devices.reshape(devices.size // fsdp, fsdp), ("data", "fsdp"))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes a batch dimension is split over (every device's own rows)."""
  return tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)


# Leaves smaller than this stay replicated: splitting them saves nothing and
# costs a collective per use.
FSDP_MIN_SIZE = 1 << 14


def fsdp_spec(shape, fsdp: int) -> P:
  """Split a leaf's largest dimension that `fsdp` divides over "fsdp"; else replicate."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
  return P()


def fsdp_shardings(tree, mesh: Mesh):
  """A NamedSharding per leaf of `tree` (arrays or shape-dtype structs): the sharding
  rule for parameters, gradients and optimizer state, the same for every model."""
  fsdp = dict(zip(mesh.axis_names, mesh.devices.shape)).get("fsdp", 1)
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), fsdp)), tree)


def place(tree, shardings):
  """`tree` on the mesh with one sharding per leaf (`to_global` leaf by leaf)."""
  return jax.tree.map(lambda x, s: _leaf_to_global(x, s), tree, shardings)


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


def per_device_bytes(tree) -> int:
  """Bytes the largest device holds of `tree` (placed global arrays)."""
  held: dict = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
  return max(held.values(), default=0)


def device_memory_limit() -> int | None:
  """The first local device's memory in bytes, where the platform reports it (GPU, TPU);
  None on CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")


def check_fits(parts: dict[str, int], what: str, fix: str, limit: int | None = None) -> str:
  """A one-line per-device memory estimate of `parts` (name -> bytes); raises MemoryError
  naming `fix` when their sum exceeds the device's memory (`limit`, else the device's)."""
  limit = device_memory_limit() if limit is None else limit
  total = sum(parts.values())
  line = (f"{what}: per-device estimate " +
          ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in parts.items()) +
          f"; total {total / 2**20:.1f} MiB" +
          ("" if limit is None else f" of {limit / 2**20:.0f} MiB"))
  if limit is not None and total > limit:
    raise MemoryError(f"{line}: does not fit; {fix}")
  return line
