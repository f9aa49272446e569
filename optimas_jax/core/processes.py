"""Python objects across the processes of a multi-process JAX run.

System runs and Monte-Carlo rollouts are split across processes and their
records (traces: dicts, strings, numbers) gathered back; JAX's collectives
move arrays only, so each record travels pickled as a uint8 array through
`multihost_utils.process_allgather` (gloo on CPU, the platform's own on GPU
and TPU). Every process must call these in the same order.
"""

from __future__ import annotations

import pickle
from typing import Any

import jax
import numpy as np


def share(n: int, index: int | None = None, count: int | None = None) -> range:
  """The contiguous block of `range(n)` process `index` of `count` runs.

  Blocks, not strides, so each process's batches keep neighbouring examples
  (similar lengths, one prompt bucket); sizes differ by at most one.
  """
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  base, extra = divmod(n, count)
  start = index * base + min(index, extra)
  return range(start, start + base + (index < extra))


def allgather_objects(obj: Any) -> list[Any]:
  """Every process's `obj`, in process order (a no-op list for one process)."""
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils
  payload = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([payload.size], np.int64)))
  sizes = sizes.reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:payload.size] = payload
  gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
  return [pickle.loads(gathered[i, :sizes[i]].tobytes()) for i in range(len(sizes))]
