"""Amazon next-item system: pooling, features, rankings, decision rules, a real-data run."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from optimas_jax import system as osys
from optimas_jax.tasks.amazon import system as amazon

ROOT = pathlib.Path(__file__).parents[2]
DATA = ROOT.parent / "shared" / "data" / "amazon" / "session_based_next_item_selection_dataset.csv"


class FakeEmbedder:
  """Bag-of-words vectors: titles sharing words are similar, as with MiniLM."""

  VOCAB = ["lego", "car", "doll", "pen", "ink", "shoe", "red", "blue"]

  def embed(self, texts):
    v = np.array([[float(w in t.lower().split()) for w in self.VOCAB] for t in texts]) + 1e-3
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_pooling_weights():
  np.testing.assert_allclose(amazon.pooling_weights(5, {"pooling": "last", "focus": 3, "decay": .5}),
                             [0, 0, 1])
  np.testing.assert_allclose(amazon.pooling_weights(2, {"pooling": "mean", "focus": 5, "decay": .5}),
                             [.5, .5])
  w = amazon.pooling_weights(4, {"pooling": "decay", "focus": 3, "decay": 0.5})
  np.testing.assert_allclose(w, np.array([.25, .5, 1]) / 1.75)


def _system(params_seed=0):
  system = amazon.build_system(FakeEmbedder())
  return system, system.default_config()


EXAMPLE = {"sequence": ["red shoe", "lego car", "blue lego car"],
           "choices": ["ink pen", "lego car red", "doll", "blue shoe"], "answer": 1}


def test_features_prefer_the_candidate_like_the_session():
  feats, mask = amazon.candidate_features(FakeEmbedder(), [
      {"session_focus": EXAMPLE["sequence"], "focus_weights": [0, 0, 1],
       "choices": EXAMPLE["choices"]}])
  assert feats.shape == (1, 4, amazon.NUM_FEATURES) and mask.all()
  assert int(np.argmax(feats[0, :, 0])) == 1          # pooled (last item) similarity
  assert int(np.argmax(feats[0, :, 5])) == 1          # best single-item similarity


def test_untrained_profiler_ranks_by_pooled_cosine():
  # The policy starts as the zero-training cosine ranker (feature 0) and can move away from it.
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(5, 4, amazon.NUM_FEATURES)).astype(np.float32)
  params = amazon.init_profiler(3)
  logits = np.asarray(amazon.profiler_logits(params, feats))
  np.testing.assert_allclose(logits - logits[..., :1], 10 * (feats[..., 0] - feats[..., :1, 0]),
                             rtol=1e-5, atol=1e-5)
  moved = {**params, "Dense_2": {**params["Dense_2"], "kernel": params["Dense_2"]["kernel"] + 1}}
  assert not np.allclose(np.asarray(amazon.profiler_logits(moved, feats)), logits)


def test_decider_rules_on_a_real_ranking():
  system, cfg = _system()
  for rule in ("ranking", "similarity", "borda"):
    res = system.run([EXAMPLE], cfg.override(next_item_decider={"rule": rule}), seed=0)
    assert res.num_failed == 0
    out = res.traces[0].steps
    ranking, sims = out["candidate_profiler"].outputs["ranking"], \
        out["candidate_profiler"].outputs["similarity"]
    assert sorted(ranking) == sorted(EXAMPLE["choices"]) and len(sims) == 4
    choice = out["next_item_decider"].outputs["choice"]
    if rule == "ranking":
      assert choice == ranking[0]
    if rule == "similarity":
      assert choice == ranking[int(np.argmax(sims))] == "lego car red"


def test_render_follows_the_ordering_and_keeps_similarities_aligned():
  x = {"session_focus": EXAMPLE["sequence"], "focus_weights": [0, 0, 1],
       "choices": EXAMPLE["choices"]}
  feats, _ = amazon.candidate_features(FakeEmbedder(), [x])
  out = amazon.render_ranking(x, [2, 1, 3, 0], feats[0])
  assert out["ranking"] == ["doll", "lego car red", "blue shoe", "ink pen"]
  by_title = dict(zip(out["ranking"], out["similarity"]))
  assert by_title["lego car red"] == max(out["similarity"])


def test_the_policy_optimizer_rewards_exactly_what_the_profiler_deploys():
  # Train/deploy agreement: the component's output for any parameters is the
  # render of the policy's greedy ordering, the mode of what training samples.
  from optimas_jax.core.ranking import greedy_ordering
  x = {"session_focus": EXAMPLE["sequence"], "focus_weights": [0, 0, 1],
       "choices": EXAMPLE["choices"]}
  system, cfg = _system()
  params = amazon.init_profiler(0)
  rng = np.random.default_rng(0)
  for _ in range(3):
    params = {k: {n: v + rng.normal(size=v.shape).astype(np.float32) for n, v in layer.items()}
              for k, layer in params.items()}
    deployed = system.components["candidate_profiler"].call([x], params, osys.BatchRng((0,)))[0]
    feats, mask = amazon.candidate_features(FakeEmbedder(), [x])
    order = greedy_ordering(np.asarray(amazon.profiler_logits(params, feats)), mask, 4)[0]
    assert amazon.render_ranking(x, order, feats[0]) == deployed


def test_proposals_are_permutations_and_depend_on_the_seed():
  system, cfg = _system()
  comp = system.components["candidate_profiler"]
  x = {"session_focus": EXAMPLE["sequence"], "focus_weights": [0, 0, 1],
       "choices": EXAMPLE["choices"]}
  a = comp.propose([x], cfg["candidate_profiler"], 6, osys.BatchRng((1,)))[0]
  b = comp.propose([x], cfg["candidate_profiler"], 6, osys.BatchRng((2,)))[0]
  assert all(sorted(p["ranking"]) == sorted(EXAMPLE["choices"]) for p in a)
  assert [p["ranking"] for p in a] != [p["ranking"] for p in b]


@pytest.mark.skipif(not DATA.exists(), reason=f"real Amazon data absent at {DATA}")
def test_amazon_smoke_run_on_real_data(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "optimas_jax.main",
                         "--config=experiments/amazon.py:smoke", f"--config.data.path={DATA}",
                         f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["iterations"] == 3 and summary["test_extra"]["failed"] == 0
  # The reference split: 24 test items, so accuracy is a multiple of 1/24.
  assert abs(summary["test"] * 24 - round(summary["test"] * 24)) < 1e-9
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert records[0]["collect/candidate_profiler"]["pairs"] > 0
  assert {r["component"] for r in records[1:]} == {"session_analyzer", "candidate_profiler",
                                                   "next_item_decider"}
