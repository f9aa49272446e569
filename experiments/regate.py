"""Re-decide every accepted change in logged runs under the exact gate and the run's spending.

  python experiments/regate.py docs --out docs/results/regate.md

Reads each run's metrics.jsonl (and config.json for the planned iterations and the
confidence; where a run kept no config, summary.json's iterations run, which is at most
the planned number and so errs toward passing), takes its gate records in order, and for each accepted one reports the
exact one-sided sign test p-value of its wins and losses (exact for 0/1 metrics; for
graded metrics such as F1 it is the sign test, because the per-item scores behind the
old records were not logged and the permutation test needs them), and whether it passes
alone (alpha = 1 - confidence) and with the run's error spent across its gates by the
default rule ("series": alpha / (k (k + 1)) at the k-th gate, loop/gate.py). A run whose accepted changes all pass keeps its
table entry; from a run's first change that no longer passes on, its trajectory (and so
its final configuration) is not what the new gate would produce.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from optimas_jax.loop import gate as gate_lib


def run_records(folder: pathlib.Path):
  """(planned iterations, confidence, [gate records in order]) of one run folder."""
  def read(name):
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else {}
  loop = read("config.json").get("loop", {})
  # Runs logged without their config: the iterations they ran (<= planned: lenient).
  loop.setdefault("iterations", read("summary.json").get("iterations", 0))
  gates = []
  for line in (folder / "metrics.jsonl").read_text().splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if isinstance(record.get("gate"), dict):
      gates.append(record)
  return int(loop.get("iterations", len(gates)) or len(gates)), \
      float(loop.get("gate_confidence", 0.9)), gates


def regate(root: pathlib.Path) -> list[dict]:
  rows = []
  for metrics in sorted(root.rglob("metrics.jsonl")):
    planned, confidence, gates = run_records(metrics.parent)
    for index, record in enumerate(gates, start=1):
      g = record["gate"]
      if not g.get("accepted") or g.get("test") == "exact":   # exact: decided by this gate
        continue
      p = gate_lib.sign_test_p(int(g["wins"]), int(g["losses"]))
      alone = 1.0 - confidence
      spent = gate_lib.level(confidence, "series", index, planned)
      rows.append({"run": str(metrics.parent.relative_to(root)),
                   "iteration": record.get("iteration"), "component": record.get("component"),
                   "gate_index": index, "planned": planned, "old_test": g.get("test"),
                   "old_p": g.get("p_value"), "wins": g["wins"], "losses": g["losses"],
                   "ties": g["ties"], "sign_p": p, "alpha": alone, "alpha_spent": spent,
                   "passes_alone": p <= alone, "passes_spent": p <= spent})
  return rows


def markdown(rows: list[dict]) -> str:
  lines = ["| run | iter | component | W/L/T | logged 'p' (test) | exact sign p | alone "
           "(alpha) | run-level (alpha spent) |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    old = "n/a" if r["old_p"] is None else f"{r['old_p']:.4f}"
    lines.append(
        f"| {r['run']} | {r['iteration']} | {r['component']} | {r['wins']}/{r['losses']}/"
        f"{r['ties']} | {old} ({r['old_test']}) | {r['sign_p']:.4f} | "
        f"{'pass' if r['passes_alone'] else 'FAIL'} ({r['alpha']:.2f}) | "
        f"{'pass' if r['passes_spent'] else 'FAIL'} ({r['alpha_spent']:.4f}, "
        f"gate {r['gate_index']}) |")
  runs = sorted({r["run"] for r in rows})
  kept = [run for run in runs if all(r["passes_spent"] for r in rows if r["run"] == run)]
  summary = [f"Accepted decisions: {len(rows)} in {len(runs)} runs.",
             f"Pass the exact sign test alone: {sum(r['passes_alone'] for r in rows)}; "
             f"with the run's error spent (series, alpha/(k(k+1)) at gate k): "
             f"{sum(r['passes_spent'] for r in rows)}.",
             f"Runs whose every accepted change still passes (entry stands): {len(kept)} of "
             f"{len(runs)}: {', '.join(kept) or 'none'}."]
  head = ["# Accepted changes of logged runs, re-decided by the exact gate", "",
          "Written by `python experiments/regate.py docs --out docs/results/regate.md`. Each "
          "row is a change a run kept under the earlier gate (its logged 'p' is that gate's "
          "statistic: for the paired bootstrap, a tail share, not a p-value). 'exact sign p' "
          "is the one-sided sign test of its wins and losses (exact for 0/1 metrics; for graded "
          "metrics the sign test, as per-item scores were not logged). 'alone' tests it at "
          "1 - confidence; 'run-level' at the default spending, alpha / (k (k + 1)) at the "
          "run's k-th gate. From a run's first FAIL on, its trajectory is not what the "
          "exact gate would produce.", ""]
  return "\n".join(head) + "\n" + "\n\n".join(summary) + "\n\n" + "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("root", type=pathlib.Path)
  parser.add_argument("--out", type=pathlib.Path, default=None)
  args = parser.parse_args()
  rows = regate(args.root)
  text = markdown(rows)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
  print(text)


if __name__ == "__main__":
  main()
