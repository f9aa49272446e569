"""Running one component on a batch: bounded concurrency, retries, failures.

Failure policy (see OPTIMAS.md "Defects"): an error on one example marks that
example failed with the exception text; it is never dropped. Only errors the
component declares transient are retried, with exponential backoff and a cap.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Any, Callable, Sequence

from optimas_jax.core.seeds import BatchRng


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """Which errors are transient and how often / how long to retry them."""

  transient: tuple[type[BaseException], ...] = ()
  max_retries: int = 3
  backoff_s: float = 0.5
  max_backoff_s: float = 8.0

  def delay(self, attempt: int) -> float:
    return min(self.backoff_s * (2 ** attempt), self.max_backoff_s)


@dataclasses.dataclass(frozen=True)
class ExampleFailure:
  """The recorded failure of one example at one component."""

  component: str
  error: str

  def __str__(self) -> str:
    return f"{self.component}: {self.error}"


def call_with_retries(fn: Callable[[], Any], policy: RetryPolicy,
                      on_retry: Callable[[], None] = lambda: None):
  """Calls `fn`, retrying only `policy.transient` errors, at most max_retries times."""
  attempt = 0
  while True:
    try:
      return fn()
    except policy.transient:
      if attempt >= policy.max_retries:
        raise
      on_retry()
      time.sleep(policy.delay(attempt))
      attempt += 1


def per_example(fn: Callable[[dict, Any, Any], dict], max_workers: int = 8,
                retry: RetryPolicy | None = None):
  """Turns a per-example function into a batch call over a bounded thread pool.

  For components that call remote services: up to `max_workers` requests are
  in flight, results come back in input order (never completion order), and
  an example whose call raises yields that exception in its slot, so the rest
  of the batch still succeeds. `fn(inputs, variable, np_rng) -> outputs`.
  """
  retry = retry or RetryPolicy()

  def batch_call(inputs: Sequence[dict], variable, rng: BatchRng) -> list:
    def one(i):
      try:
        return call_with_retries(lambda: fn(inputs[i], variable, rng.numpy(i)), retry)
      except Exception as e:  # recorded as this example's failure
        return e
    if max_workers <= 1 or len(inputs) <= 1:
      return [one(i) for i in range(len(inputs))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as pool:
      return list(pool.map(one, range(len(inputs))))  # map keeps input order

  batch_call.__name__ = getattr(fn, "__name__", "per_example")
  return batch_call
