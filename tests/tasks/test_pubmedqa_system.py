"""PubMedQA system: the final-answer parser, the local models, a smoke run on real data."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from optimas_jax.tasks.pubmedqa import system as pubmed

ROOT = pathlib.Path(__file__).parents[2]
DATA = ROOT.parent / "shared" / "data" / "pubmedqa"


@pytest.mark.parametrize("text, label", [
    ("Answer: yes", "yes"),
    ("No doubt the trial was small.\nAnswer: yes", "yes"),          # reference reads "no"
    ("Maybe.\nThe data say otherwise.\n**Answer: No**", "no"),
    ("answer : maybe.", "maybe"),
    ("Answer: yes\n...on reflection...\nAnswer: no", "no"),         # the last line wins
    ("The final answer: maybe, given the mixed results.", "maybe"),   # no line: last phrase
    ("Answer: Yesterday's data", None),                               # word boundary
    ("yes", None),                                                     # no "Answer:" at all
    ("", None),
])
def test_parse_answer_reads_the_final_answer_line(text, label):
  assert pubmed.parse_answer(text) == label


def test_accuracy_scores_a_missing_answer_as_wrong():
  assert pubmed.accuracy({"groundtruth": "yes"}, {"answer": "Answer: yes"}) == 1.0
  assert pubmed.accuracy({"groundtruth": "yes"}, {"answer": "I think yes"}) == 0.0


def test_split_sentences_keeps_every_sentence():
  sents = pubmed.split_sentences(["A rose by 5.2 mg. It fell (p<0.05). Done!", "B. C."])
  assert sents == ["A rose by 5.2 mg.", "It fell (p<0.05).", "Done!", "B.", "C."]


def test_option_logprobs_equal_a_full_forward_pass():
  """The likelihood solver's scores equal log-softmax over the decoder's full logits."""
  import jax
  from optimas_jax.llm.local import load_local_llm
  llm = load_local_llm("tiny-llama")
  requests = [[{"role": "user", "content": "Is it? Say yes or no."}],
              [{"role": "user", "content": "A much longer question about several things?"}]]
  options = [" yes", " no", " maybe"]
  got = llm.option_logprobs(requests, options, prefix="Answer:")
  module, params = llm.generator.module, llm.generator.params
  for i, r in enumerate(requests):
    prompt = llm.tokenizer.encode(llm.render(r) + "Answer:", add_special_tokens=False)
    for j, o in enumerate(options):
      opt = llm.tokenizer.encode(o, add_special_tokens=False)
      ids = np.array([prompt + opt])
      logp = jax.nn.log_softmax(module.apply(params, ids, np.ones_like(ids)), axis=-1)[0]
      want = sum(float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(opt))
      np.testing.assert_allclose(got[i, j], want, atol=1e-3)
  single = np.concatenate([llm.option_logprobs([r], options, prefix="Answer:") for r in requests])
  np.testing.assert_allclose(got, single, atol=1e-4)   # padding does not leak across rows


@pytest.mark.skipif(not DATA.exists(), reason=f"real PubMedQA data absent at {DATA}")
def test_pubmedqa_smoke_run_on_real_data(tmp_path):
  """Every component and both model choices run through the Optimas loop (tiny-llama)."""
  tiny = ["--config.llm.model=tiny-llama",
          "--config.system.context_models=('tiny-llama','minilm-extract')",
          "--config.system.solver_models=('tiny-llama','tiny-llama:choice')"]
  proc = subprocess.run([sys.executable, "-m", "optimas_jax.main",
                         "--config=experiments/pubmedqa.py:smoke", f"--config.data.path={DATA}",
                         f"--workdir={tmp_path}", *tiny], cwd=ROOT, capture_output=True,
                        text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["iterations"] == 2 and 0.0 <= summary["test"] <= 1.0
  assert summary["test_extra"]["failed"] == 0
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  init = records[0]
  # The greedy prompt components get candidates from prompt variants (hints), so pairs exist.
  assert init["collect/context_model_selector"]["candidates"] >= 2 * init["collect/context_model_selector"]["examples"]
  assert init["collect/problem_solver"]["candidates"] > init["collect/problem_solver"]["examples"]
