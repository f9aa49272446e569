"""GeoQA-hop: only a query that makes the hop reaches the answer."""

import numpy as np
import pytest

from optimas_jax.tasks.geo import hop


@pytest.fixture(scope="module")
def res():
  return hop.load_resources(None)


def test_splits_are_disjoint_and_deterministic():
  a = hop.make_splits({"train": 30, "val": 10, "test": 20}, seed=3)
  b = hop.make_splits({"train": 30, "val": 10, "test": 20}, seed=3)
  assert a == b
  countries = [{x["country"] for x in a[s]} for s in ("train", "val", "test")]
  assert sum(map(len, countries)) == 60 == len(set().union(*countries))
  with pytest.raises(ValueError, match="at most"):
    hop.make_splits({"train": 10_000}, seed=0)


def test_the_question_alone_misses_and_the_hop_query_hits(res):
  examples = hop.make_splits({"val": 40}, seed=0)["val"]
  by_question = [hop.read_answer(res.top(x["question"], 2)) == x["answer"] for x in examples]
  by_hop = [hop.read_answer(res.top(f"{x['country']} currency", 2)) == x["answer"]
            for x in examples]
  assert np.mean(by_hop) == 1.0
  assert np.mean(by_question) < 0.2
  # The first hop finds the capital's passage, which names the country.
  for x in examples[:10]:
    assert res.top(x["question"], 1)[0].endswith(f"capital city of {x['country']}.")


def test_system_runs_and_scores_an_oracle_writer(res):
  # A writer that copies the country from the hop passage answers everything.
  system = hop.build_system(res, "prompt")
  examples = hop.make_splits({"val": 6}, seed=1)["val"]

  class Oracle:
    def generate(self, requests, params, rng=None):
      from optimas_jax.llm.base import Generation
      out = []
      for r in requests:
        passage = r[1]["content"].split("\n")[0]
        country = passage.split("capital city of ")[1].rstrip(".")
        out.append(Generation(f"{country} currency", 3, 10, "stop"))
      return out

  res.llm = Oracle()
  try:
    result = system.run(examples, system.default_config())
  finally:
    res.llm = None
  assert system.evaluate(examples, result).mean() == 1.0
  assert hop.retrieval_hit(examples, result) == 1.0
