"""Optimas for an existing DSPy program: a real 2-predictor dspy.Module against the loopback
server (tiny-llama): the System it becomes, the Optimas loop on it, write-back, bad input."""

import importlib.util
import json
import pathlib

import pytest

from tests.peers.conftest import require_peers

require_peers()

import dspy  # noqa: E402

from optimas_jax import system as osys  # noqa: E402
from optimas_jax.adapt import dspy as dspy_program  # noqa: E402
from optimas_jax.peers import env  # noqa: E402
from optimas_jax.peers.dspy_adapter import CountingChatAdapter  # noqa: E402
from optimas_jax.peers.served import ServedModel  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


class HintThenAnswer(dspy.Module):
  """Two predictors chained by a field name: `hint` feeds the answerer."""

  def __init__(self):
    super().__init__()
    self.hinter = dspy.Predict(dspy.Signature("question -> hint", "Write a one-line hint."))
    self.answerer = dspy.Predict(dspy.Signature("question, hint -> answer",
                                                "Answer with one word."))

  def forward(self, question):
    hint = self.hinter(question=question).hint
    return self.answerer(question=question, hint=hint)


def metric(example, prediction, trace=None):
  del trace
  return float(len(prediction.answer) % 2 == example.parity)   # varies on random text


DATA = [dspy.Example(question=f"Question {i}: where is city {i}?", parity=i % 2)
        .with_inputs("question") for i in range(10)]


@pytest.fixture(scope="module")
def served(server):
  return ServedModel(server.url, "tiny-llama")


@pytest.fixture(scope="module")
def lm(served, tmp_path_factory):
  return served.dspy_lm(tmp_path_factory.mktemp("dspy"), temperature=0.0, max_tokens=6,
                        cache=False)


def test_a_dspy_program_becomes_a_system_that_reproduces_it(lm, server):
  program = HintThenAnswer()
  bridge = dspy_program.from_dspy(program, metric, lms={"tiny": lm})
  system = bridge.system
  assert system.order == ("hinter", "answerer") and bridge.input_fields == ("question",)
  assert system.metric.fields == ("answer",)
  assert {n: type(s).__name__ for n, s in system.specs.items()} == {"hinter": "Prompt",
                                                                    "answerer": "Prompt"}
  assert system.default_config()["hinter"] == "Write a one-line hint."
  before = server.stats()["generated"]
  with env.LoopbackOnly() as guard:
    result = system.run(bridge.examples(DATA[:4]), system.default_config())
    assert bridge.check(DATA[:2]) == []      # the program's own forward gives the same answers
  assert not guard.outside
  assert result.num_failed == 0 and all(p["answer"] for p in result.predictions)
  # 2 predictors x (4 examples + check's 2 through the System + 2 through the program)
  assert bridge.adapter.parse_stats() == {"calls": 16, "parse_failures": 0}
  assert server.stats()["generated"] - before == 16
  scores = system.evaluate(bridge.examples(DATA[:4]), result)
  assert set(scores) <= {0.0, 1.0}
  # DSPy's own adapter on the same model and questions: field markers, then JSON, both fail.
  chat = CountingChatAdapter()
  with dspy.context(lm=lm, adapter=chat):
    for ex in DATA[:2]:
      with pytest.raises(Exception):
        program(question=ex.question)
  assert chat.parse_stats() == {"calls": 2, "parse_failures": 2}


def test_several_lms_make_a_model_choice_per_predictor(lm, served, tmp_path):
  other = served.dspy_lm(tmp_path, temperature=0.0, max_tokens=3, cache=False)
  program = HintThenAnswer()
  program.answerer.lm = other
  bridge = dspy_program.from_dspy(program, metric, lms={"six": lm, "three": other})
  specs = bridge.system.specs
  assert isinstance(specs["hinter_model"], osys.ModelChoice) and specs["hinter_model"].default == "six"
  assert specs["answerer_model"].default == "three"        # the predictor's own LM
  config = bridge.system.default_config().override(answerer_model="six", answerer="Reply.")
  bridge.write_back(config, tmp_path / "program.json")
  loaded = HintThenAnswer()
  loaded.load(str(tmp_path / "program.json"))
  assert loaded.answerer.signature.instructions == "Reply."
  assert program.answerer.lm is lm


def _optimas_config():
  spec = importlib.util.spec_from_file_location("common", ROOT / "experiments" / "common.py")
  common = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(common)
  config = common.optimas_config()
  config.task = "geoqa"            # validated against the registry; the Task is ours
  config.method = "coordinate"     # the loop without LRFs: fast; experiments/dspy_program.py
  config.collect.cache = False     # runs method=optimas
  config.loop.iterations = 2
  config.loop.examples_per_iteration = 3
  config.loop.budget_runs = 24
  config.optimizers.prompt_llm_proposals = 0
  config.optimizers.prompt_edit_proposals = 2
  return config


def test_the_optimas_loop_runs_on_the_program_and_writes_back(lm, tmp_path):
  program = HintThenAnswer()
  bridge = dspy_program.from_dspy(program, metric, lms={"tiny": lm})
  with env.LoopbackOnly() as guard:
    summary = bridge.optimize(_optimas_config(), tmp_path / "run", DATA[:4], DATA[4:7], DATA[7:],
                              save_to=tmp_path / "optimized.json")
  assert not guard.outside
  assert summary["budget_runs"] <= 24 and summary["test_runs"] == 3
  assert summary["detail"]["parse"]["calls"] > 0
  saved = json.loads((tmp_path / "optimized.json").read_text())
  for name in ("hinter", "answerer"):   # DSPy's own state format, with the final instructions
    assert saved[name]["signature"]["instructions"] == bridge.final_config[name]
    assert saved[name]["signature"]["instructions"] == getattr(program, name).signature.instructions
  assert "metadata" in saved


def test_bad_programs_and_metrics_name_the_problem(lm):
  program = HintThenAnswer()
  program.hinter.signature = None
  with pytest.raises(dspy_program.DspyProgramError, match="'hinter' has no signature"):
    dspy_program.from_dspy(program, metric)
  with pytest.raises(dspy_program.DspyProgramError, match="no predictors"):
    dspy_program.from_dspy(dspy.Module(), metric)
  bridge = dspy_program.from_dspy(HintThenAnswer(), lambda ex, pred: None, lms={"tiny": lm})
  result = bridge.system.run(bridge.examples(DATA[:1]), bridge.system.default_config())
  with pytest.raises(dspy_program.MetricReturnedNone, match="returned None"):
    bridge.system.evaluate(bridge.examples(DATA[:1]), result)
  with pytest.raises(dspy_program.DspyProgramError, match="lacks the program's input fields"):
    bridge.examples([{"parity": 1}])
