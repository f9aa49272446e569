"""Amazon in the paper's shape: two LLM policies (LoRA adapters) and a decider.

A scripted LLM and a bag-of-words embedder stand in for SmolLM2 and MiniLM,
so this checks the wiring (what each stage reads, how replies are parsed,
how the decider falls back) in a second; the real models run in the
experiment (experiments/amazon.py:llm).
"""

import pathlib

import numpy as np
import pytest

from optimas_jax import system as osys
from optimas_jax.llm.base import Generation
from optimas_jax.tasks.amazon import llm_system

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared/data/amazon/session_based_next_item_selection_dataset.csv"

EXAMPLES = [
    {"sequence": ["Red tea kettle", "Green tea cups"], "choices": ["Bike pump", "Tea strainer",
                                                                  "Dog bowl", "Phone case"],
     "answer": 1},
    {"sequence": ["Dog leash", "Dog collar"], "choices": ["Tea pot", "Bike bell", "Dog bowl",
                                                          "Lamp"], "answer": 2},
]


class ScriptedLLM:
  """Analyzer: names the last item's first word; profiler: says `pick`."""

  def __init__(self, pick: str):
    self.pick, self.requests, self.adapters = pick, [], []

  def generate(self, requests, params, rng=None, adapter=None):
    self.requests += requests
    self.adapters.append(adapter)
    out = []
    for r in requests:
      user = r[1]["content"]
      if user.startswith("Recently viewed"):
        text = user.splitlines()[-1].split()[1] + " products"
      else:
        text = self.pick
      out.append(Generation(text, 2, 10, "stop"))
    return out


class WordEmbedder:
  def embed(self, texts):
    vocab = ["tea", "dog", "bike", "phone", "lamp", "green", "red"]
    v = np.array([[float(w in t.lower()) for w in vocab] for t in texts], np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


def _system(llm):
  inits = {n: (lambda seed: {"layers": {}}) for n in ("session_analyzer", "candidate_profiler")}
  return llm_system.build_system(WordEmbedder(), llm, inits,
                                 {"session_analyzer": 8, "candidate_profiler": 4})


def test_a_reply_without_a_number_falls_back_to_the_summary():
  llm = ScriptedLLM(pick="I am not sure")
  system = _system(llm)
  result = system.run(EXAMPLES, system.default_config())
  # The analyzer's summary ("Green products", "Dog products") picks by similarity.
  assert [p["summary"] for p in result.predictions] == ["Green products", "Dog products"]
  assert [p["profiler_pick"] for p in result.predictions] == [0, 0]
  assert system.evaluate(EXAMPLES, result).tolist() == [0.0, 1.0]
  # Each stage ran with its own adapter value, passed to the LLM.
  assert llm.adapters == [{"layers": {}}, {"layers": {}}]


def test_the_profilers_number_decides_unless_the_rule_says_similarity():
  system = _system(ScriptedLLM(pick="4."))
  config = system.default_config()
  assert [p["choice"] for p in system.run(EXAMPLES, config).predictions] == [
      "Phone case", "Lamp"]
  config = config.override(next_item_decider={"rule": "similarity"})
  assert [p["choice"] for p in system.run(EXAMPLES, config).predictions][1] == "Dog bowl"


def test_propose_samples_alternatives_with_one_seed_each():
  llm = ScriptedLLM(pick="2")
  comp = _system(llm).components["candidate_profiler"]
  inputs = [{"summary": "tea", "choices": EXAMPLES[0]["choices"]}]
  alts = comp.propose(inputs, {"layers": {}}, 3, osys.BatchRng((7,)))
  assert len(alts) == 1 and len(alts[0]) == 3
  assert all(a["profiler_pick"] == 2 for a in alts[0])
  assert llm_system.profiler_output("Candidate 3 fits") == {"profiler_pick": 3,
                                                            "profiler_text": "Candidate 3 fits"}


def test_prompt_variant_makes_each_stages_system_prompt_its_variable():
  llm = ScriptedLLM(pick="2")
  inits = {n: (lambda seed: {"layers": {}}) for n in ("session_analyzer", "candidate_profiler")}
  system = llm_system.build_system(WordEmbedder(), llm, inits,
                                   {"session_analyzer": 8, "candidate_profiler": 4},
                                   variable="prompt")
  config = system.default_config()
  assert config["session_analyzer"] == llm_system.ANALYZER_PROMPT
  config = config.override(candidate_profiler="Pick the tea item.")
  system.run(EXAMPLES, config)
  # No adapter reaches the LLM; the profiler's requests carry the new prompt.
  assert llm.adapters == [None, None]
  systems = [r[0]["content"] for r in llm.requests]
  assert systems == [llm_system.ANALYZER_PROMPT] * 2 + ["Pick the tea item."] * 2


def test_prompt_sizes_cut_the_session_and_titles():
  sizes = llm_system.PromptSizes(session_items=1, title_chars=10)
  [request] = llm_system.analyzer_requests(
      [{"sequence": ["Old lamp", "Green tea cups and saucers"]}], sizes=sizes)
  assert request[1]["content"] == "Recently viewed:\n- Green tea..."
  with pytest.raises(ValueError, match="session_items=0"):
    llm_system.PromptSizes(session_items=0)


def test_an_unknown_variable_is_refused_by_name():
  with pytest.raises(ValueError, match="policy_variable='weights'"):
    llm_system.build_system(WordEmbedder(), ScriptedLLM("1"), {}, {}, variable="weights")


def _experiment_config(arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location("amazon_exp", ROOT / "experiments" / "amazon.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_the_experiments_variable_is_checked_before_data_and_llm_load(monkeypatch):
  from optimas_jax.llm import local
  from optimas_jax.tasks import registry
  monkeypatch.setattr(local, "load_local_llm", lambda *a, **k: pytest.fail("loaded the LLM"))
  config = _experiment_config("llm")
  config.data.path = "/nonexistent/amazon.csv"     # checked before the data loads, too
  config.system.policy_variable = "weights"
  with pytest.raises(ValueError, match="policy_variable='weights'"):
    registry.build(config)


@pytest.mark.skipif(not DATA.exists(), reason=f"real Amazon data absent at {DATA}")
def test_the_comparisons_prompt_arm_builds_on_the_reference_split():
  from optimas_jax.tasks import registry
  config = _experiment_config("llm")
  config.data.path = str(DATA)
  config.system.policy_variable = "prompt"
  task = registry.build(config)
  assert {k: len(v) for k, v in task.splits.items()} == {"train": 48, "val": 15, "test": 24}
  specs = task.system.specs
  assert [type(specs[n]).__name__ for n in ("session_analyzer", "candidate_profiler")] == [
      "Prompt", "Prompt"]
  assert task.policies == {} and set(task.hints) == {"session_analyzer", "candidate_profiler"}
