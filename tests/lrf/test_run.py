"""End to end: run(config, workdir) on the ':smoke' config, then resume."""

import importlib.util
import json
import pathlib

from optimas_jax.lrf.run import run

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config():
  spec = importlib.util.spec_from_file_location(
      "lrf_amazon", ROOT / "experiments" / "lrf_amazon.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config("smoke")


def _lines(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_then_resume(tmp_path):
  config = _config()
  first = run(config, tmp_path)
  total = first["total_steps"]
  assert first["step"] == total > 0
  lines = _lines(tmp_path)
  train = [l for l in lines if l["split"] == "train"]
  evals = [l for l in lines if l["split"] == "eval"]
  assert [l["step"] for l in train] == list(range(1, total + 1))
  assert evals and set(evals[-1]["per_component"]) >= {"accuracy", "kendall_tau"}
  assert all(len(l["per_component"]["head_grad_norm"]) == 1 for l in train)
  steps_per_epoch = total // config.lrf.epochs

  # Resume with one more epoch: continues from the checkpoint, not step 0.
  config.lrf.epochs += 1
  second = run(config, tmp_path)
  assert second["step"] == total + steps_per_epoch
  new_train = [l for l in _lines(tmp_path)[len(lines):] if l["split"] == "train"]
  assert new_train[0]["step"] == total + 1
