"""Baselines and ablations at equal budget, over seeds, into report.md + a plot.

  python -m optimas_jax.compare --config=experiments/geoqa.py --workdir=runs/compare --seeds=0,1,2

For each seed, Optimas runs first; its spend of system runs (full plus
partial runs, system/counters.py) becomes the cap of every other iterating
method, which then runs until the cap stops it, exactly at the cap, inside
an iteration if need be. Each (method, seed) is its own resumable workdir,
so an interrupted comparison continues where it stopped.

The paper's peers run in the same harness (the `peers` extra; see
optimas_jax/peers/baselines.py), capped at Optimas's spend like the others:

  python -m optimas_jax.compare --config=experiments/geoqa.py --workdir=runs/peers \
      --methods=unoptimized,mipro_instructions,mipro,gepa,textgrad,optimas --seeds=0,1,2
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from optimas_jax import jobs
from optimas_jax.loop import METHODS, run_method
from optimas_jax.metrics_log import MetricsLog
from optimas_jax.runtime import QuietLibraries, enable_compilation_cache
from optimas_jax.tasks import registry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root folder of all runs and the report.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each changes the run's randomness).")
_METHODS = flags.DEFINE_list("methods", ["unoptimized", "coordinate", "optimas_static", "optimas"],
                             "Methods to compare; optimas always runs first to set the budget.")
_ARMS = flags.DEFINE_multi_string(
    "arm", [], "NAME:METHOD[:FIELD=VALUE[;FIELD=VALUE]]: an arm of the comparison, a method "
    "on the config with overrides (e.g. prompt:optimas:system.writer_variable=prompt). "
    "Replaces --methods; the first iterating arm runs first and sets every arm's budget.")
_BUDGET = flags.DEFINE_integer(
    "budget_runs", 0,
    "Cap EVERY iterating arm, the first one too, at this many system runs (each then loses "
    "the iteration its cap cuts, alike). 0: the first iterating arm runs its iterations "
    "uncapped and its spend caps the rest (only the capped arms lose a cut iteration: "
    "summary.json's cut_iteration_runs says how much).")
flags.mark_flags_as_required(["config", "workdir"])

# A capped method gets this many times Optimas's iterations: the budget, not
# the iteration count, is what ends it.
ITERATIONS_FACTOR = 20


@dataclasses.dataclass(frozen=True)
class Arm:
  """One side of a comparison: a method on the config with field overrides."""

  name: str
  method: str
  overrides: tuple[tuple[str, str], ...] = ()

  @classmethod
  def parse(cls, text: str) -> "Arm":
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0].isidentifier():
      raise ValueError(f"--arm={text!r}: expected NAME:METHOD[:FIELD=VALUE;...]")
    if parts[1] not in METHODS:
      raise ValueError(f"--arm={text!r}: unknown method {parts[1]!r}; choose from "
                       f"{sorted(METHODS)}")
    overrides = []
    for item in (parts[2].split(";") if len(parts) == 3 and parts[2] else []):
      field, eq, value = item.partition("=")
      if not eq:
        raise ValueError(f"--arm={text!r}: override {item!r} is not FIELD=VALUE")
      overrides.append((field.strip(), value.strip()))
    return cls(parts[0], parts[1], tuple(overrides))


def _set_field(cfg, field: str, value: str, arm: str) -> None:
  *parents, leaf = field.split(".")
  node = cfg
  for p in parents:
    if p not in node:
      raise ValueError(f"--arm {arm}: config has no field {field!r}")
    node = node[p]
  if leaf not in node:
    raise ValueError(f"--arm {arm}: config has no field {field!r}")
  old = node[leaf]
  # The override takes the type of the field it replaces ("3" -> 3, "true" -> True).
  if isinstance(old, bool):
    node[leaf] = value.lower() in ("1", "true", "yes")
  elif isinstance(old, (int, float)):
    node[leaf] = type(old)(value)
  else:
    node[leaf] = value


def arm_config(config, seed: int, arm: Arm, budget: int | None, sets_budget: bool):
  """The config of one arm and seed; every arm but the budget setter is capped."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.seed = int(seed)
    cfg.method = arm.method
    for field, value in arm.overrides:
      _set_field(cfg, field, value, arm.name)
    if not sets_budget and METHODS[arm.method].iterates and budget is not None:
      cfg.loop.budget_runs = budget
      cfg.loop.iterations = config.loop.iterations * ITERATIONS_FACTOR
      if cfg.loop.get("gate_spending") == "bonferroni":
        raise ValueError(
            f"arm {arm.name}: config.loop.gate_spending='bonferroni' divides the error by the "
            "planned iterations, but a budget-capped arm runs an unknown number of them; use "
            "'series' (the default) so every arm spends its error by one rule")
  jobs.validate(cfg)
  return cfg


def method_configs(config, seed: int, methods, budget: int | None):
  """(method, config) pairs of one seed; capped methods get Optimas's budget."""
  return [(m, arm_config(config, seed, Arm(m, m), budget, m == "optimas")) for m in methods]


def arms_from_methods(methods, budget_fixed: bool = False) -> list[Arm]:
  """Optimas first (it sets the budget), then the rest; with a fixed budget, just `methods`."""
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f"--methods: unknown {unknown}; choose from {sorted(METHODS)}")
  first = [] if budget_fixed else ["optimas"]
  return [Arm(m, m) for m in first + [m for m in methods if m not in first]]


def run_all(config, root: pathlib.Path, seeds, methods=None, arms=None,
            budget_runs: int = 0) -> list[dict]:
  """Runs every arm of every seed; the first iterating arm sets the others' budget, or
  with `budget_runs` > 0 every iterating arm is capped at it alike.

  `methods` (names) is the short form of `arms`: Optimas first, then the rest.
  An arm that is only there to set the budget (optimas when not in
  `methods`) runs but is not reported.
  """
  if budget_runs < 0:
    raise ValueError(f"--budget_runs={budget_runs}: use 0 (the first arm sets it) or > 0")
  reported = None
  if arms is None:
    arms = arms_from_methods(methods, budget_fixed=budget_runs > 0)
    reported = set(methods)
  names = [a.name for a in arms]
  if len(set(names)) != len(names):
    raise ValueError(f"--arm names must differ, got {names}")
  setter = None if budget_runs else next(
      (a.name for a in arms if METHODS[a.method].iterates), None)
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
      workdir.mkdir(parents=True, exist_ok=True)
      summary_path = workdir / "summary.json"
      if summary_path.exists():
        summary = json.loads(summary_path.read_text())
      else:
        # Arms with the same overrides share one task (models, indexes); its counters
        # start afresh for every run.
        key = arm.overrides
        if key not in tasks:
          tasks[key] = registry.build(cfg)
        task = tasks[key]
        task.system.counters.reset()
        task.reset_usage()
        summary = run_method(task, cfg, str(workdir))
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
            if r["seed"] == seed and METHODS[r["method"]].iterates]
    if runs and max(runs):
      spread = max(spread, (max(runs) - min(runs)) / max(runs))
  return spread


def parse_failures(rs: list[dict]) -> str:
  """'system / optimizer LM' failures summed over seeds (the peers' replies that did not parse:
  peers/baselines.py); "-" where a method makes no such calls or does not count them."""
  system = sum(sum(c["failures"] for c in r["counters"]["components"].values()) for r in rs)
  optimizer = [r["parse"] for r in rs if "parse" in r]
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
    if METHODS[r["method"]].adapts_lrf:
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


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(QuietLibraries())
  enable_compilation_cache()
  root = pathlib.Path(_WORKDIR.value)
  root.mkdir(parents=True, exist_ok=True)
  if _ARMS.value:
    results = run_all(_CONFIG.value, root, _SEEDS.value, arms=[Arm.parse(a) for a in _ARMS.value],
                      budget_runs=_BUDGET.value)
  else:
    results = run_all(_CONFIG.value, root, _SEEDS.value, _METHODS.value,
                      budget_runs=_BUDGET.value)
  import sys
  command = "python -m optimas_jax.compare " + " ".join(sys.argv[1:])
  print(write_report(results, root, command, _CONFIG.value.task))
  print(plot(results, root))


if __name__ == "__main__":
  app.run(main)
