"""HotpotQA system: paragraphs, retrieval, reply cleaning, a smoke run on real data."""

import json
import pathlib
import subprocess
import sys

import pytest

from optimas_jax.tasks.data import hotpotqa as hotpot_data
from optimas_jax.tasks.hotpotqa import system as hotpot

ROOT = pathlib.Path(__file__).parents[2]
DATA = ROOT.parent / "shared" / "data" / "hotpotqa" / "hotpotqa_distractor_sample.jsonl"


@pytest.mark.parametrize("text, clean", [
    ("Short Answer: Paris\nmore", "Paris"),
    ("\n\nanswer: 1987", "1987"),
    ("Rewritten Query: Who was born first?", "Who was born first?"),
    ("Yes", "Yes"),
    ("", ""),
])
def test_clean_reply(text, clean):
  assert hotpot.clean_reply(text) == clean


def test_rank_paragraphs_by_keywords():
  paras = ["Alpha: a town in Spain.", "Beta: a river in France with a long bridge.",
           "Gamma: a bridge over the Beta river."]
  assert hotpot.rank_paragraphs("Beta river bridge", paras)[:2] == [2, 1] or \
      hotpot.rank_paragraphs("Beta river bridge", paras)[:2] == [1, 2]
  assert hotpot.rank_paragraphs("Spain", paras)[0] == 0


@pytest.mark.skipif(not DATA.exists(), reason=f"real HotpotQA data absent at {DATA}")
def test_retriever_finds_gold_paragraphs_with_the_question_as_query():
  examples = hotpot_data.load(DATA).splits["test"]
  hits = total = 0
  for ex in examples:
    paras = hotpot.paragraphs(ex)
    top = {paras[j].split(": ")[0] for j in hotpot.rank_paragraphs(ex["question"], paras)[:5]}
    gold = set(ex["supporting_facts"]["title"])
    hits += len(gold & top)
    total += len(gold)
  # BM25 on the question alone puts most gold paragraphs in the top 5 of 10.
  assert hits / total > 0.7


@pytest.mark.skipif(not DATA.exists(), reason=f"real HotpotQA data absent at {DATA}")
def test_hotpotqa_smoke_run_on_real_data(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "optimas_jax.main",
                         "--config=experiments/hotpotqa.py:smoke", f"--config.data.path={DATA}",
                         f"--workdir={tmp_path}", "--config.llm.model=tiny-llama"], cwd=ROOT,
                        capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["iterations"] == 2 and summary["test_extra"]["failed"] == 0
  assert 0.0 <= summary["test_extra"]["gold_recall"] <= 1.0
  usage = summary["llm_usage"]["models"]["tiny-llama"]
  assert usage["requests"] > 0
