"""Timing helper shared by the benchmark scripts."""

import statistics
import time


def median_time(fn, repeats: int) -> float:
  """Median wall seconds of `repeats` calls of `fn`, after one warm-up call (compilation)."""
  fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)
