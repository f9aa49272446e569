"""Baselines and ablations at equal budget, over seeds, into report.md + a plot.

  python -m optimas_jax.compare --config=experiments/geoqa.py --workdir=runs/compare --seeds=0,1,2

For each seed, Optimas runs first; its spend of system runs (full plus
partial re-runs) becomes the budget of Optimas-static and coordinate search,
so every method gets the same number of system runs. Each (method, seed) is
its own resumable workdir, so an interrupted comparison continues where it
stopped.
"""

from __future__ import annotations

import copy
import json
import pathlib

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from optimas_jax import loop
from optimas_jax.runtime import QuietLibraries, enable_compilation_cache
from optimas_jax.tasks import registry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root folder of all runs and the report.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each changes the run's randomness).")
_METHODS = flags.DEFINE_list("methods", ["unoptimized", "coordinate", "optimas_static", "optimas"],
                             "Methods to compare; optimas always runs first to set the budget.")
flags.mark_flags_as_required(["config", "workdir"])


def run_all(config, root: pathlib.Path, seeds, methods) -> list[dict]:
  results = []
  task = None
  for seed in seeds:
    budget = None
    for method in ["optimas"] + [m for m in methods if m != "optimas"]:
      if method not in methods and method != "optimas":
        continue
      cfg = copy.deepcopy(config)
      with cfg.unlocked():
        cfg.seed = int(seed)
        cfg.method = method
        if method in ("coordinate", "optimas_static") and budget is not None:
          cfg.loop.budget_runs = budget
          cfg.loop.iterations = config.loop.iterations * 4   # the budget ends it
      workdir = root / f"{method}-seed{seed}"
      workdir.mkdir(parents=True, exist_ok=True)
      summary_path = workdir / "summary.json"
      if summary_path.exists():
        summary = json.loads(summary_path.read_text())
      else:
        task = task or registry.build(cfg)
        # One task (models, indexes) serves every run; its counters start afresh.
        task.system.counters.restore({"system_runs": 0, "partial_runs": 0, "components": {}})
        if task.llm is not None:
          task.llm.usage = type(task.llm.usage)()
        summary = loop.OptimasLoop(task, cfg, str(workdir)).run()
      if method == "optimas":
        budget = summary["budget_runs"]
      results.append(summary | {"workdir": str(workdir)})
      logging.info("%s seed %s: test %.3f val %.3f runs %d", method, seed, summary["test"],
                   summary["val"], summary["budget_runs"])
  return results


def _alignment(workdir: str) -> dict[str, float]:
  per: dict[str, list] = {}
  for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if r.get("event") == "iteration" and r.get("alignment") is not None:
      per.setdefault(r["component"], []).append(r["alignment"])
  return {c: float(np.mean(v)) for c, v in per.items()}


def write_report(results: list[dict], root: pathlib.Path, command: str) -> str:
  methods = list(dict.fromkeys(r["method"] for r in results))
  lines = ["# GeoQA: Optimas against baselines at equal budget", "",
           f"Command: `{command}`", "",
           "| method | test F1 (mean ± std) | test EM | system runs | wall s | seeds |",
           "|---|---|---|---|---|---|"]
  for m in methods:
    rs = [r for r in results if r["method"] == m]
    f1 = np.array([r["test"] for r in rs])
    em = np.array([r["test_extra"].get("exact_match", np.nan) for r in rs])
    lines.append(f"| {m} | {f1.mean():.3f} ± {f1.std():.3f} | {np.nanmean(em):.3f} | "
                 f"{np.mean([r['budget_runs'] for r in rs]):.0f} | "
                 f"{np.mean([r['wall_s'] for r in rs]):.0f} | {len(rs)} |")
  lines += ["", "LRF alignment (pairwise accuracy on fresh pairs, before each online update):", ""]
  for r in results:
    if r["method"].startswith("optimas"):
      al = _alignment(r["workdir"])
      lines.append(f"- {r['method']} seed {r['seed']}: " +
                   ", ".join(f"{c} {v:.2f}" for c, v in sorted(al.items())))
  lines += ["", "Final configurations:", ""]
  for r in results:
    lines.append(f"- {r['method']} seed {r['seed']}: `{json.dumps(r['config'])}`")
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
    xs, ys = [0], [r["history"][0]["val"] if r["history"] else r["val"]]
    recs = [json.loads(l) for l in (pathlib.Path(r["workdir"]) / "metrics.jsonl")
            .read_text().splitlines()]
    init = next((x for x in recs if x.get("event") == "init"), None)
    xs, ys = ([init["budget"]], [init["val"]]) if init else ([], [])
    for x in recs:
      if x.get("event") == "iteration":
        xs.append(x["budget"])
        ys.append(x["val"])
    c = colors.setdefault(r["method"], f"C{len(colors)}")
    ax.step(xs, ys, where="post", color=c, alpha=0.8,
            label=r["method"] if r["seed"] == results[0]["seed"] else None)
  ax.set_xlabel("system runs (full + partial)")
  ax.set_ylabel("validation F1")
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
  results = run_all(_CONFIG.value, root, _SEEDS.value, _METHODS.value)
  import sys
  command = "python -m optimas_jax.compare " + " ".join(sys.argv[1:])
  print(write_report(results, root, command))
  print(plot(results, root))


if __name__ == "__main__":
  app.run(main)
