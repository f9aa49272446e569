"""Methods side by side at equal budget, over seeds: report.md and a plot.

For each seed, the first iterating arm runs first; its spend of system runs
(full plus partial runs, system/counters.py) becomes the cap of every other
iterating arm, which then runs until the cap stops it, exactly at the cap,
inside an iteration if need be. With a fixed `budget_runs`, every iterating
arm is capped at it alike. Each (arm, seed) is its own resumable workdir,
so an interrupted comparison continues where it stopped.

An arm is a method on the experiment's config with typed field overrides,
written in the experiment file:

  config.arms = (
      dict(name="rl_lrf", method="optimas"),
      dict(name="prompt_lrf", method="optimas",
           overrides={"system.writer_variable": "prompt"}),
  )

Without arms, `methods` names them (each arm a method, Optimas first).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
from typing import Any, Mapping

import numpy as np
from absl import logging

from optimas_jax import methods as methods_lib
from optimas_jax.methods import placement
from optimas_jax.metrics_log import MetricsLog
from optimas_jax.tasks import registry

# A capped method gets this many times the config's iterations: the budget,
# not the iteration count, is what ends it.
ITERATIONS_FACTOR = 20
ARM_KEYS = ("name", "method", "overrides")


@dataclasses.dataclass(frozen=True)
class Arm:
  """One side of a comparison: a method on the config with field overrides."""

  name: str
  method: str
  overrides: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def from_config(cls, entry: Mapping, where: str) -> "Arm":
    """An Arm from an experiment file's `config.arms` entry (a dict), checked."""
    if not isinstance(entry, Mapping):
      raise ValueError(f"{where}: expected dict(name=..., method=..., overrides={{...}}), "
                       f"got {entry!r}")
    unknown = sorted(set(entry) - set(ARM_KEYS))
    if unknown or "name" not in entry or "method" not in entry:
      raise ValueError(f"{where}: keys {sorted(entry)}; expected name, method and optionally "
                       "overrides")
    name, method = entry["name"], entry["method"]
    if not isinstance(name, str) or not name.isidentifier():
      raise ValueError(f"{where}.name={name!r}: use an identifier (it names the workdir)")
    methods_lib.get(method)
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
      raise ValueError(f"{where}.overrides: expected {{'dotted.field': value}}, got "
                       f"{overrides!r}")
    return cls(name, method, tuple(sorted(overrides.items())))

  @property
  def iterates(self) -> bool:
    return methods_lib.get(self.method).iterates


def arms_of(config, methods=None, budget_fixed: bool = False) -> tuple[list[Arm], set | None]:
  """(arms, names to report): `config.arms` when the experiment sets them, else `methods`
  (Optimas first unless the budget is fixed; an Optimas only there to set the budget is
  run but not reported)."""
  given = tuple(config.get("arms") or ())
  if given and methods:
    raise ValueError("config.arms is set: drop --methods (the experiment file names the arms)")
  if given:
    arms = [Arm.from_config(e, f"config.arms[{i}]") for i, e in enumerate(given)]
    reported = None
  else:
    if not methods:
      raise ValueError("no arms: set config.arms in the experiment file or pass --methods")
    for m in methods:
      methods_lib.get(m)
    first = [] if budget_fixed else ["optimas"]
    arms = [Arm(m, m) for m in first + [m for m in methods if m not in first]]
    reported = set(methods)
  names = [a.name for a in arms]
  if len(set(names)) != len(names):
    raise ValueError(f"arm names must differ, got {names}")
  return arms, reported


def arm_config(config, seed: int, arm: Arm, budget: int | None, sets_budget: bool):
  """The config of one arm and seed; every arm but the budget setter is capped."""
  cfg = copy.deepcopy(config)
  cfg.lock()                       # an override may replace a field, never add one
  cfg.seed = int(seed)
  cfg.method = arm.method
  try:
    # Typed: an unknown field or a value of the wrong type fails here, naming the field.
    cfg.update_from_flattened_dict(dict(arm.overrides))
  except (KeyError, TypeError) as e:
    raise ValueError(f"arm {arm.name}: override {dict(arm.overrides)} does not fit the "
                     f"config: {e}") from None
  if not sets_budget and arm.iterates and budget is not None:
    cfg.loop.budget_runs = budget
    cfg.loop.iterations = config.loop.iterations * ITERATIONS_FACTOR
    if cfg.loop.gate_spending == "bonferroni":
      raise ValueError(
          f"arm {arm.name}: config.loop.gate_spending='bonferroni' divides the error by the "
          "planned iterations, but a budget-capped arm runs an unknown number of them; use "
          "'series' (the default) so every arm spends its error by one rule")
  methods_lib.validate(cfg)
  return cfg


def run_all(config, root: pathlib.Path, seeds, methods=None, budget_runs: int = 0) -> list[dict]:
  """Runs every arm of every seed; the first iterating arm sets the others' budget, or
  with `budget_runs` > 0 every iterating arm is capped at it alike."""
  if budget_runs < 0:
    raise ValueError(f"--budget_runs={budget_runs}: use 0 (the first arm sets it) or > 0")
  arms, reported = arms_of(config, methods, budget_fixed=budget_runs > 0)
  setter = None if budget_runs else next((a.name for a in arms if a.iterates), None)
  for seed in seeds:                      # every config is checked before any model loads
    for arm in arms:
      arm_config(config, seed, arm, 0, arm.name == setter)
  results = []
  tasks = {}
  for seed in seeds:
    budget = budget_runs or None
    for arm in arms:
      cfg = arm_config(config, seed, arm, budget, arm.name == setter)
      workdir = root / f"{arm.name}-seed{seed}"
      # Arms with the same overrides share one task (models, indexes); its counters
      # start afresh for every run.
      if arm.overrides not in tasks:
        tasks[arm.overrides] = placement.place(registry.build(cfg), cfg)
      task = tasks[arm.overrides]
      task.system.counters.reset()
      task.reset_usage()
      summary = methods_lib.run(task, cfg, workdir, reuse_summary=True)
      if arm.name == setter:
        budget = summary["budget_runs"]
      if reported is None or arm.name in reported:
        results.append(summary | {"workdir": str(workdir), "arm": arm.name})
      logging.info("%s seed %s: test %.3f val %.3f runs %d", arm.name, seed, summary["test"],
                   summary["val"], summary["budget_runs"])
  return results


def _records(workdir: str) -> list[dict]:
  return MetricsLog(pathlib.Path(workdir) / "metrics.jsonl").records()


def _alignment(workdir: str) -> dict[str, float]:
  per: dict[str, list] = {}
  for r in _records(workdir):
    if r.get("event") == "iteration" and r.get("alignment") is not None:
      per.setdefault(r["component"], []).append(r["alignment"])
  return {c: float(np.mean(v)) for c, v in per.items()}


def budget_spread(results: list[dict]) -> float:
  """Largest relative gap between the budgets of the iterating methods of one seed."""
  spread = 0.0
  for seed in {r["seed"] for r in results}:
    runs = [r["budget_runs"] for r in results
            if r["seed"] == seed and methods_lib.get(r["method"]).iterates]
    if runs and max(runs):
      spread = max(spread, (max(runs) - min(runs)) / max(runs))
  return spread


def parse_failures(rs: list[dict]) -> str:
  """'system / optimizer LM' failures summed over seeds (the peers' replies that did not parse:
  peers/program.py); "-" where a method makes no such calls or does not count them."""
  system = sum(sum(c["failures"] for c in r["counters"]["components"].values()) for r in rs)
  optimizer = [r["detail"]["parse"] for r in rs if "parse" in (r.get("detail") or {})]
  if not optimizer:
    return f"{system} / -"
  return (f"{system} / {sum(p['optimizer_parse_failures'] for p in optimizer)} of "
          f"{sum(p['optimizer_calls'] for p in optimizer)}")


def write_report(results: list[dict], root: pathlib.Path, command: str, task: str) -> str:
  methods = list(dict.fromkeys(r["arm"] for r in results))
  # Exact match is a column only where the task reports it (GeoQA, HotpotQA, peers).
  has_em = any("exact_match" in r["test_extra"] for r in results)
  lines = [f"# {task}: Optimas against baselines at equal budget", "",
           f"Command: `{command}`", "",
           "| method | test (mean ± std) | " + ("test EM | " if has_em else "") +
           "system runs (mean, min-max) | "
           "accepted changes | parse failures: system / optimizer LM | wall s | seeds |",
           "|---|---|---|---|---|---|---|" + ("---|" if has_em else "")]
  for m in methods:
    rs = [r for r in results if r["arm"] == m]
    test = np.array([r["test"] for r in rs])
    em = np.array([r["test_extra"].get("exact_match", np.nan) for r in rs])
    em_cell = (f"{np.nanmean(em) if np.isfinite(em).any() else float('nan'):.3f} | "
               if has_em else "")
    runs = [r["budget_runs"] for r in rs]
    accepted = np.mean([sum(h["accepted"] for h in r["history"]) for r in rs])
    lines.append(f"| {m} | {test.mean():.3f} ± {test.std():.3f} | {em_cell}"
                 f"{np.mean(runs):.0f} ({min(runs)}-{max(runs)}) | {accepted:.1f} | "
                 f"{parse_failures(rs)} | "
                 f"{np.mean([r['wall_s'] for r in rs]):.0f} | {len(rs)} |")
  lines += ["", f"Budgets of the iterating methods differ by at most "
            f"{100 * budget_spread(results):.2f}% within a seed.", "",
            "LRF alignment (pairwise accuracy on fresh pairs, before each online update):", ""]
  for r in results:
    if getattr(methods_lib.get(r["method"]), "adapts_lrf", False):
      alignment = _alignment(r["workdir"])
      lines.append(f"- {r['arm']} seed {r['seed']}: " +
                   ", ".join(f"{c} {v:.2f}" for c, v in sorted(alignment.items())))
  lines += ["", "Final configurations:", ""]
  for r in results:
    lines.append(f"- {r['arm']} seed {r['seed']}: `{json.dumps(r['config'])}`")
  text = "\n".join(lines) + "\n"
  (root / "report.md").write_text(text)
  return text


def plot(results: list[dict], root: pathlib.Path) -> pathlib.Path:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  colors = {}
  for r in results:
    recs = _records(r["workdir"])
    init = next((x for x in recs if x.get("event") == "init"), None)
    xs, ys = ([init["budget"]], [init["val"]]) if init else ([], [])
    for x in recs:
      if x.get("event") == "iteration":
        xs.append(x["budget"])
        ys.append(x["val"])
    c = colors.setdefault(r["arm"], f"C{len(colors)}")
    ax.step(xs, ys, where="post", color=c, alpha=0.8,
            label=r["arm"] if r["seed"] == results[0]["seed"] else None)
  ax.set_xlabel("system runs (full + partial)")
  ax.set_ylabel("validation score")
  ax.legend()
  fig.tight_layout()
  path = root / "val_vs_runs.png"
  fig.savefig(path, dpi=120)
  return path
