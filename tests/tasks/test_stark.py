"""STaRK: the GeoNames KB and its questions, the first stage, the ranking metrics, the
three-component system on a fake likelihood model, and the stark-qa release loader."""

import json
import math
import sys

import numpy as np
import pytest

from optimas_jax.tasks import metrics
from optimas_jax.tasks.data import DataFormatError, DataPathError
from optimas_jax.tasks.stark import data, questions, release
from optimas_jax.tasks.stark import kb as kb_lib
from optimas_jax.tasks.stark import system as stark


@pytest.fixture(scope="module")
def kb():
  return kb_lib.geonames_kb()


def node(kb, name, kind):
  return next(n for n in kb.nodes if n.name == name and n.type == kind)


# ------------------------------------------------------------------ the KB


def test_kb_relations_run_both_ways_and_stay_out_of_the_text(kb):
  peru, lima = node(kb, "Peru", "country"), node(kb, "Lima", "city")
  brazil = node(kb, "Brazil", "country")
  assert lima.id in kb.related(peru.id, "has_capital") and lima.id in kb.related(peru.id, "has_city")
  assert kb.related(lima.id, "capital_of") == (peru.id,)
  assert peru.id in kb.related(brazil.id, "neighbour_of") and brazil.id in kb.related(peru.id, "neighbour_of")
  assert kb.nodes[kb.related(peru.id, "in_continent")[0]].name == "South America"
  assert "Sol (PEN)" in kb.relation_info(peru.id) and "neighbour_of Bolivia, Brazil" in kb.relation_info(peru.id)
  text = kb.text_info(peru.id)
  assert "population" in text and "Spanish" in text and "Brazil" not in text and "Lima" not in text
  assert kb.document(peru.id) == text + " " + kb.relation_info(peru.id)
  kinds = {n.type for n in kb.nodes}
  assert kinds == {"continent", "currency", "country", "city"}
  assert [n.id for n in kb.nodes] == list(range(len(kb.nodes)))


@pytest.mark.parametrize("low, high, want", [
    (2_100_000, 2_900_000, 2_200_000), (31_989_256, 209_469_333, 100_000_000),
    (7.5, 7.9, 7.6), (999, 1001, 1000), (5, 5, None), (3, 2, None)])
def test_round_between_picks_the_roundest_number_strictly_inside(low, high, want):
  got = questions.round_between(low, high)
  assert got == want or (want is not None and math.isclose(got, want))


def test_every_question_needs_its_relation_and_its_property(kb):
  pool = questions.question_pool(kb, seed=0)
  assert pool == questions.question_pool(kb, seed=0)            # deterministic
  assert {q["type"] for q in pool} == set(questions.TEMPLATES)
  assert len({q["question"] for q in pool}) == len(pool)
  relation = {"neighbour_population": "neighbour_of", "neighbour_area": "neighbour_of",
              "currency_population": "used_by", "city_population": "has_city",
              "continent_language": "has_country"}
  for q in pool:
    related = kb.related(q["anchor_id"], relation[q["type"]])
    assert 1 <= len(q["answer_ids"]) <= questions.MAX_ANSWERS
    assert set(q["answer_ids"]) < set(related)                  # a related non-answer exists
    if q["type"] == "continent_language":
      want = {i for i in related if q["language"] in kb.nodes[i].languages}
    else:
      attr = "area_km2" if q["type"] == "neighbour_area" else "population"
      t = q["threshold"]
      want = {i for i in related
              if (getattr(kb.nodes[i], attr) > t if q["above"] else getattr(kb.nodes[i], attr) < t)}
    assert set(q["answer_ids"]) == want, q["question"]


def test_splits_are_fixed_disjoint_and_sized(kb):
  sizes = {"train": 10, "val": 5, "test": 7}
  a, b = questions.make_splits(kb, sizes, 0), questions.make_splits(kb, sizes, 0)
  assert a == b and {k: len(v) for k, v in a.items()} == sizes
  texts = [q["question"] for rows in a.values() for q in rows]
  assert len(set(texts)) == len(texts)
  assert questions.make_splits(kb, sizes, 1)["test"] != a["test"]
  with pytest.raises(ValueError, match="lower config.data sizes"):
    questions.make_splits(kb, {"train": 10_000}, 0)


# ------------------------------------------------------------ first stage


class FakeEmbedder:
  """Bag of words hashed into 64 dims, normalized: deterministic and fast."""

  def preload(self, texts, name):
    pass

  def embed(self, texts):
    out = np.zeros((len(texts), 64), np.float32)
    for r, t in enumerate(texts):
      for w in t.lower().replace(",", " ").split():
        out[r, sum(map(ord, w)) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_first_stage_keeps_its_order_scores_and_depth(kb):
  rows = questions.make_splits(kb, {"test": 30}, 0)["test"]
  out = data.attach_candidates(rows, kb, FakeEmbedder(), num_candidates=4)
  for ex in out:
    assert len(ex["candidate_ids"]) == 4 and ex["retrieved_ids"][:4] == ex["candidate_ids"]
    assert len(ex["retrieved_ids"]) == data.RECALL_DEPTH
    assert ex["emb_scores"] == sorted(ex["emb_scores"], reverse=True)
    assert ex["relation_info"] == [kb.relation_info(i) for i in ex["candidate_ids"]]
    assert ex["text_info"] == [kb.text_info(i) for i in ex["candidate_ids"]]
  recall = stark.first_stage_recall(out, None)
  assert 0 <= recall < 1       # without force_gold a gold answer may be missing
  forced = data.attach_candidates(rows, kb, FakeEmbedder(), num_candidates=4, force_gold=True)
  assert stark.first_stage_recall(forced, None) == 1.0
  for ex in forced:
    assert ex["emb_scores"] == sorted(ex["emb_scores"], reverse=True)
  with pytest.raises(ValueError, match="at least 2"):
    data.attach_candidates(rows, kb, FakeEmbedder(), num_candidates=1)


# ---------------------------------------------------------------- metrics


def test_ranking_metrics():
  assert metrics.rank_by_scores([7, 8, 9], [0.1, 0.5, 0.5]) == [8, 9, 7]   # ties keep order
  assert metrics.reciprocal_rank([8, 9, 7], [7]) == pytest.approx(1 / 3)
  assert metrics.reciprocal_rank([8, 9], [7]) == 0.0
  assert metrics.hit_at_k([8, 9, 7], [9], 1) == 0.0 and metrics.hit_at_k([8, 9, 7], [9], 2) == 1.0
  assert metrics.recall_at_k([8, 9, 7], [7, 9, 5], 2) == pytest.approx(1 / 3)
  assert metrics.recall_at_k([8], [], 2) == 0.0
  with pytest.raises(ValueError):
    metrics.rank_by_scores([1, 2], [0.5])
  ex = {"candidate_ids": [1, 2, 3], "answer_ids": [3, 40], "retrieved_ids": [1, 2, 3, 40, 50]}
  pred = {"final_scores": [0.2, 0.1, 0.9]}
  assert stark.mrr(ex, pred) == 1.0
  assert stark.full_ranking(ex, pred) == [3, 1, 2, 40, 50]


# ------------------------------------------------------------ the system


class FakeLLM:
  """P(Yes) = 0.9 when the candidate's info holds the word after "has" in the question,
  else 0.1 (a stand-in for the likelihood reader); counts requests."""

  def __init__(self):
    self.requests = 0

  def option_logprobs(self, requests, options, prefix=""):
    assert options == [stark.YES] and prefix == stark.ANSWER_PREFIX
    self.requests += len(requests)
    out = []
    for r in requests:
      user = r[1]["content"]
      question, info = user.split("\n")[0], user.split("\n")[1]
      key = question.split(" has ")[-1].split()[0].strip("?")
      out.append([math.log(0.9 if key in info else 0.1)])
    return np.array(out)


def examples():
  return [{"id": "a", "question": "Which entity has red?", "answer_ids": [2],
           "candidate_ids": [1, 2, 3], "emb_scores": [0.5, 0.45, 0.4],
           "relation_info": ["one: blue", "two: red", "three: green"],
           "text_info": ["one", "two red", "three"]},
          {"id": "b", "question": "Which entity has green?", "answer_ids": [3, 9],
           "candidate_ids": [1, 2, 3], "emb_scores": [0.5, 0.45, 0.4],
           "relation_info": ["x", "y", "z"], "text_info": ["a", "b", "c"]}]


def test_system_combines_scores_with_the_weights_and_memoises():
  llm = FakeLLM()
  system = stark.build_system(stark.LikelihoodScorer(llm), weights=(0.1, 0.1))
  config = system.default_config()
  exs = examples()
  result = system.run(exs, config)
  p = result.predictions
  assert p[0]["relation_scores"] == [0.1, 0.9, 0.1] and p[0]["text_scores"] == [0.1, 0.9, 0.1]
  assert p[0]["final_scores"] == [0.52, 0.63, 0.42]
  np.testing.assert_allclose(system.evaluate(exs, result), [1.0, 1 / 3])
  assert stark.hit_at_1(exs, result) == 0.5
  assert stark.recall_at_20(exs, result) == pytest.approx((1 + 0.5) / 2)
  assert stark.first_stage_mrr(exs, result) == pytest.approx((0.5 + 1 / 3) / 2)
  per_scorer = sum(stark.chunk_sizes(6))              # 6 candidates, padded to batch shapes
  assert llm.requests == 2 * per_scorer
  system.run(exs, config)
  assert llm.requests == 2 * per_scorer               # same prompt, same candidates: memo
  system.run(exs, config.override(text_scorer="Another prompt."))
  assert llm.requests == 3 * per_scorer               # only the changed scorer asks again
  heavy = config.override(final_scorer={"relation_weight": 0.0, "text_weight": 0.0})
  res = system.run(exs, heavy)
  assert [x["final_scores"] for x in res.predictions] == [e["emb_scores"] for e in exs]


def test_a_malformed_example_fails_alone_and_is_counted():
  llm = FakeLLM()
  system = stark.build_system(stark.LikelihoodScorer(llm))
  exs = examples()
  exs[0] = {**exs[0], "relation_info": "not a list"}
  exs.append({**examples()[1], "id": "c", "text_info": ["only one"]})   # lengths differ
  result = system.run(exs, system.default_config())
  assert [t.failed for t in result.traces] == [True, False, True]
  assert "relation_info must be a non-empty list" in str(result.traces[0].failure)
  assert "differ in length" in str(result.traces[2].failure)
  assert system.counters.snapshot()["components"]["relation_scorer"]["failures"] == 1
  np.testing.assert_allclose(system.evaluate(exs, result), [0.0, 1 / 3, 0.0])
  assert stark.hit_at_1(exs, result) == 0.0


def test_scorer_needs_a_likelihood_backend():
  with pytest.raises(ValueError, match="option_logprobs"):
    stark.LikelihoodScorer(object())


def test_long_info_is_cut_for_the_prompt():
  msg = stark.user_message("Q?", "Info", "x" * 50, max_chars=10)
  assert "x" * 10 + "..." in msg and "x" * 11 not in msg


# ---------------------------------------------------------- release loader

QA = [(101, "Which gene is red?", "[5]"), (102, "Which drug treats it?", "[6, 7]"),
      (105, "Which protein binds X?", "[8]"), (107, "Which pathway?", "[9]")]


def entry(ids=(5, 6)):
  return {"candidate_ids": list(ids), "simiarity": [0.9, 0.8][:len(ids)],
          "relation_info": [f"- name: n{i} - relations: ppi" for i in ids],
          "text_info": [f"- name: n{i} - summary" for i in ids]}


def write_release(root, qa=QA, csv_lines=None, index=None, cands=None):
  (root / "stark_qa").mkdir(parents=True, exist_ok=True)
  (root / "split").mkdir(exist_ok=True)
  (root / "processed").mkdir(exist_ok=True)
  lines = csv_lines or (["id,query,answer_ids"] + [f'{i},"{q}","{a}"' for i, q, a in qa])
  (root / release.QA_FILE).write_text("\n".join(lines) + "\n")
  # Positions in the sorted ids: 101 -> 0, 102 -> 1, 105 -> 2, 107 -> 3.
  index = index or {"train": "105\n101\n", "val": "102\n", "test": "107\n"}
  cands = cands or {"train": {"2": entry(), "0": entry((7, 5))}, "val": {"1": entry()},
                    "test": {"3": entry()}}
  for split in release.SPLITS:
    (root / release.index_file(split)).write_text(index[split])
    (root / release.candidate_file(split)).write_text(json.dumps(cands[split], indent=1))
  return root


def test_release_loads_in_index_order_with_the_reference_positions(tmp_path):
  loaded = release.load(write_release(tmp_path))
  s = loaded.splits
  assert [ex["id"] for ex in s["train"]] == ["105", "101"]      # index-file order
  assert s["train"][1] == {"id": "101", "question": "Which gene is red?", "answer_ids": [5],
                           "candidate_ids": [7, 5], "emb_scores": [0.9, 0.8],
                           "relation_info": ["- name: n7 - relations: ppi",
                                             "- name: n5 - relations: ppi"],
                           "text_info": ["- name: n7 - summary", "- name: n5 - summary"]}
  assert s["val"][0]["answer_ids"] == [6, 7] and s["test"][0]["id"] == "107"
  assert loaded.report.rows_skipped == 0
  # The loaded examples run through the system as they are.
  system = stark.build_system(stark.LikelihoodScorer(FakeLLM()))
  result = system.run(s["train"], system.default_config())
  assert result.num_failed == 0 and stark.recall_at_20(s["train"], result) == 0.5


BAD_CANDIDATES = [
    ({"candidate_ids": None}, "0.candidate_ids", "a non-empty list of integer ids"),
    ({"simiarity": [0.9]}, "0.simiarity", "a list of 2 numbers"),
    ({"relation_info": ["only one"]}, "0.relation_info", "a list of 2 strings"),
    ({"text_info": ["ok", 3]}, "0.text_info[1]", "a string"),
]


@pytest.mark.parametrize("change, field, expected", BAD_CANDIDATES)
def test_a_bad_candidate_entry_names_file_line_and_field(tmp_path, change, field, expected):
  bad = {**entry(), **change}
  if change.get("candidate_ids", 0) is None:
    del bad["candidate_ids"]
  cands = {"train": {"2": entry(), "0": bad}, "val": {"1": entry()}, "test": {"3": entry()}}
  root = write_release(tmp_path, cands=cands)
  with pytest.raises(DataFormatError) as err:
    release.load(root)
  e = err.value
  assert e.file == "filtered_train_ids.json" and e.field == field and expected in e.expected
  raw = (root / release.candidate_file("train")).read_text().splitlines()
  assert '"0"' in raw[e.line - 1]
  loaded = release.load(root, on_error="skip")                  # counted, never a crash
  assert [ex["id"] for ex in loaded.splits["train"]] == ["105"]
  assert loaded.report.rows_skipped == 1 and loaded.report.reasons == {field: 1}


def test_bad_qa_rows_and_index_lines_are_named_and_counted(tmp_path):
  lines = ["id,query,answer_ids", '101,"Which gene is red?","[5]"', '102,"","[6]"',
           '105,"Which protein?","[8, x]"', '107,"Which pathway?","[9]"']
  root = write_release(tmp_path, csv_lines=lines)
  with pytest.raises(DataFormatError, match=r"stark_qa.csv line 3, field 'query'"):
    release.load(root)
  loaded = release.load(root, on_error="skip")
  # 102 and 105 are skipped, so their index lines and candidate entries are errors too;
  # the other rows keep their positions (107 is still position 3).
  assert loaded.report.reasons == {"query": 1, "answer_ids": 1, "row": 4}
  assert [ex["id"] for ex in loaded.splits["train"]] == ["101"]
  assert loaded.splits["val"] == [] and [ex["id"] for ex in loaded.splits["test"]] == ["107"]
  no_id = ["id,query,answer_ids", '101,"Which gene is red?","[5]"', 'x,"Which?","[6]"']
  with pytest.raises(DataFormatError, match=r"line 3, field 'id'.*cannot be skipped"):
    release.load(write_release(tmp_path / "a", csv_lines=no_id), on_error="skip")
  index = {"train": "105\nabc\n", "val": "102\n", "test": "107\n"}
  with pytest.raises(DataFormatError, match=r"train.index line 2: expected a query id"):
    release.load(write_release(tmp_path / "b", index=index))
  cands = {"train": {"2": entry(), "1": entry()}, "val": {"1": entry()}, "test": {"3": entry()}}
  with pytest.raises(DataFormatError, match=r"listed in split/train.index"):
    release.load(write_release(tmp_path / "c", cands=cands))


def test_release_path_errors(tmp_path):
  with pytest.raises(DataPathError, match="no data path"):
    release.load("")
  with pytest.raises(DataPathError, match="lacks"):
    release.load(tmp_path)


# ------------------------------------------------------------- the config


def test_experiment_config_variants():
  sys.path.insert(0, "experiments")
  import stark as experiment
  from optimas_jax import jobs
  smoke = experiment.get_config("smoke")
  jobs.validate(smoke)
  assert smoke.task == "stark" and smoke.data.source == "geonames" and smoke.data.val == 2
  rel = experiment.get_config("release")
  assert rel.data.source == "release" and rel.data.limit.test == 40
  with pytest.raises(ValueError, match="unknown config arg"):
    experiment.get_config("nope")
  from optimas_jax.tasks.stark import task
  with pytest.raises(ValueError, match="config.data.source"):
    with smoke.unlocked():
      smoke.data.source = "web"
    task.load_splits(smoke.data, None)


@pytest.mark.parametrize("n, sizes", [(0, []), (1, [4]), (5, [4, 4]), (20, [16, 4]),
                                      (45, [32, 8, 4, 4]), (64, [32, 32])])
def test_scorer_batches_are_few_power_of_two_shapes(n, sizes):
  assert stark.chunk_sizes(n) == sizes
