"""End to end: the STaRK smoke config through the Optimas loop. Random tiny models score
and serve as the LRF backbone, so it fits CI time (about 30 s of CPU); the GeoNames KB and
the MiniLM first stage are the real ones."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]


def test_stark_smoke_runs_every_component_through_the_loop(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "optimas_jax.main",
                         "--config=experiments/stark.py:smoke", f"--workdir={tmp_path}",
                         "--config.llm.model=tiny-llama", "--config.lrf.backbone=tiny-bert",
                         "--config.lrf.max_len=128", "--config.lrf.buckets=(128,)"],
                        cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["iterations"] == 3 and 0.0 <= summary["test"] <= 1.0
  extra = summary["test_extra"]
  assert extra["failed"] == 0
  for name in ("hit_at_1", "recall_at_20", "first_stage_mrr", "first_stage_recall"):
    assert 0.0 <= extra[name] <= 1.0
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  init = records[0]
  # The greedy scorers get preference candidates from prompt variants (hints).
  for scorer in ("relation_scorer", "text_scorer"):
    stats = init[f"collect/{scorer}"]
    assert stats["candidates"] > stats["examples"] and stats["failed_candidates"] == 0
  assert [r["component"] for r in records if r.get("event") == "iteration"] == [
      "relation_scorer", "text_scorer", "final_scorer"]
  assert set(summary["config"]["final_scorer"]) == {"relation_weight", "text_weight"}
