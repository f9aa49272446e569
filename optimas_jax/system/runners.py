"""Where a system's batches run: this process, a share per JAX process, or Ray actors.

A runner takes the traces a System call admitted (a full run, a re-run, a
batch of Monte-Carlo rollouts), runs the named components on them and fills
each trace's steps or failure in place. Every runner gives the same traces:
input order is kept, per-example seeds come from the traces (never from
where an example ran), failures are recorded per example and counted. So a
run's result does not depend on the runner, only its speed does.

  LocalRunner     this process (components batch and thread-pool as they say)
  ProcessRunner   a multi-process JAX run: each process runs its contiguous
                  block, the records are gathered to every process
  RayRunner       actors on a Ray cluster, each holding its own copy of the
                  system (one model load per actor), contiguous blocks per actor
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

import jax
from absl import logging

from optimas_jax import runtime
from optimas_jax.core import processes
from optimas_jax.core.seeds import BatchRng, derive_seed
from optimas_jax.system.component import execute
from optimas_jax.system.counters import Counters
from optimas_jax.system.execution import ExampleFailure
from optimas_jax.system.trace import Step


class Runner(Protocol):

  def run(self, system, names: Sequence[str], traces: list, config, samples: list) -> None:
    """Runs components `names` in order on `traces` (filled in place); samples[i]
    is trace i's Monte-Carlo sample index (None: its own seeds)."""


def run_components(system, names, traces: list, config, samples: list,
                   counters: Counters) -> None:
  """The components `names`, in order, on `traces` in this process."""
  sample_of = {id(t): s for t, s in zip(traces, samples)}
  for name in names:
    comp = system.components[name]
    active = [t for t in traces if not t.failed]
    if not active:
      return
    contexts = [t.context() for t in active]
    inputs = [{f: ctx[f] for f in comp.input_fields} for ctx in contexts]
    variable = config[name] if comp.variable is not None else None
    rng = BatchRng(tuple(derive_seed(t.seed, name, "" if sample_of[id(t)] is None
                                     else sample_of[id(t)]) for t in active))
    results = execute(comp, inputs, variable, rng, counters)
    for t, inp, res in zip(active, inputs, results):
      if isinstance(res, ExampleFailure):
        t.failure = res
      else:
        t.steps[name] = Step(inp, res, variable)


class LocalRunner:
  """Everything in this process."""

  def __repr__(self) -> str:
    return "LocalRunner(this process)"

  def run(self, system, names, traces, config, samples) -> None:
    run_components(system, names, traces, config, samples, system.counters)


@dataclasses.dataclass(frozen=True)
class _Record:
  """What a remote share sends back for one trace: the new steps (their inputs
  and outputs; the variable is the caller's) or the failure."""

  steps: dict[str, tuple[dict, dict]]
  failure: ExampleFailure | None


def _records(traces, names) -> list[_Record]:
  return [_Record({n: (t.steps[n].inputs, t.steps[n].outputs) for n in names if n in t.steps},
                  t.failure) for t in traces]


def _apply(records: Sequence[_Record], traces, config, system) -> None:
  for t, rec in zip(traces, records):
    for n, (inp, out) in rec.steps.items():
      variable = config[n] if system.components[n].variable is not None else None
      t.steps[n] = Step(inp, out, variable)
    t.failure = rec.failure


def _merge_counts(counters: Counters, rows: dict) -> None:
  for name, row in rows.items():
    counters.add(name, **row)


def _run_share(system, names, traces, config, samples) -> tuple[list[_Record], dict]:
  counters = Counters()
  run_components(system, names, traces, config, samples, counters)
  return _records(traces, names), counters.snapshot()["components"]


def _blocks(n: int, parts: int) -> list[range]:
  return [processes.share(n, i, parts) for i in range(parts)]


class ProcessRunner:
  """A multi-process JAX run: process p runs block p; every process gets all records.

  Every process must make the same System calls in the same order (they do:
  the loop is the same program on the same data and seeds); the records are
  exchanged through JAX's collectives (core/processes.allgather_objects).
  """

  def __repr__(self) -> str:
    return f"ProcessRunner(a block per process, {jax.process_count()} processes)"

  def run(self, system, names, traces, config, samples) -> None:
    mine = processes.share(len(traces))
    shard = [traces[i] for i in mine]
    result = _run_share(system, names, shard, config, [samples[i] for i in mine])
    gathered = processes.allgather_objects(result)
    blocks = _blocks(len(traces), len(gathered))
    for block, (records, rows) in zip(blocks, gathered):
      _apply(records, [traces[i] for i in block], config, system)
      _merge_counts(system.counters, rows)


class _SystemActor:
  """A Ray actor: builds the system once (its models load here), then runs shares."""

  def __init__(self, factory: Callable[[], Any]):
    # A fresh worker process: the entry points' settings before its models load.
    self.host_memory = runtime.configure_process()
    self.system = factory()

  def settings(self) -> str:
    return f"host memory: {self.host_memory}"

  def run(self, names, traces, config, samples):
    return _run_share(self.system, names, traces, config, samples)


class RayRunner:
  """Blocks of each batch on `num_actors` Ray actors, each with its own system.

  `factory()` builds the system inside an actor (at the first batch) (a module-level function, or a
  functools.partial of one, so Ray can ship it). With `address` empty a local
  cluster of `num_cpus` CPUs starts on loopback. An actor that dies is
  restarted and its call retried (Ray's max_restarts / max_task_retries); an
  example's own failure comes back as its failure, never as a lost example.
  """

  def __init__(self, factory: Callable[[], Any], num_actors: int = 2, address: str = "",
               num_cpus: int | None = None, cpus_per_actor: float = 1.0, max_retries: int = 2):
    import ray  # the `ray` extra; without it this runner is never built (execution.backend)
    self._ray = ray
    if not ray.is_initialized():
      if address:
        ray.init(address=address, log_to_driver=False)
      else:
        ray.init(address="local", num_cpus=num_cpus or num_actors, include_dashboard=False,
                 log_to_driver=False, _node_ip_address="127.0.0.1")
    self._actor = ray.remote(num_cpus=cpus_per_actor, max_restarts=max_retries,
                             max_task_retries=max_retries)(_SystemActor)
    self.factory, self.num_actors = factory, num_actors
    self.actors = []

  def __repr__(self) -> str:
    return f"RayRunner({self.num_actors} Ray actors)"

  def run(self, system, names, traces, config, samples) -> None:
    if not self.actors:   # on first use: the actors' model loads overlap nothing else
      self.actors = [self._actor.remote(self.factory) for _ in range(self.num_actors)]
      logging.info("Ray actors: %s", self._ray.get([a.settings.remote() for a in self.actors]))
    blocks = [b for b in _blocks(len(traces), len(self.actors)) if len(b)]
    pending = [actor.run.remote(list(names), [traces[i] for i in block], config,
                                [samples[i] for i in block])
               for actor, block in zip(self.actors, blocks)]
    for block, (records, rows) in zip(blocks, self._ray.get(pending)):
      _apply(records, [traces[i] for i in block], config, system)
      _merge_counts(system.counters, rows)

  def close(self) -> None:
    for actor in self.actors:
      self._ray.kill(actor)
    self.actors = []
