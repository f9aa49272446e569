"""Each peer (MIPROv2 both modes, GEPA, TextGrad) through the real package on a small System
over tiny-llama: it stops at the budget of system runs, stays on loopback, reports parse
failures, and its summary has the one schema of every method (loop/harness.py)."""

import ml_collections
import numpy as np
import pytest

from tests.peers.conftest import require_peers

require_peers()

from optimas_jax import system as osys  # noqa: E402
from optimas_jax import methods  # noqa: E402
from optimas_jax.methods.compare import parse_failures  # noqa: E402
from optimas_jax.loop.harness import SUMMARY_KEYS  # noqa: E402
from optimas_jax.tasks import llm_calls  # noqa: E402
from optimas_jax.tasks.base import Task  # noqa: E402


@pytest.fixture(scope="module")
def task(tiny_llm):
  def write(inputs, prompt, rng):
    outs = llm_calls.chat(tiny_llm, prompt, [x["question"] for x in inputs], 6, 0.0, rng)
    return [{"answer": o.split("\n")[0][:40]} for o in outs]

  writer = osys.Component("writer", "Answer the question.", ["question"], ["answer"], write,
                          osys.Prompt("Answer the question."), deterministic=True)
  metric = osys.Metric(lambda ex, p: float(len(p["answer"]) % 2 == ex["parity"]), ["answer"],
                       name="parity")
  system = osys.System([writer], ["question"], metric)
  examples = [{"question": f"question {i}?", "parity": i % 2} for i in range(16)]
  return Task(system=system, splits={"train": examples[:6], "val": examples[6:10],
                                     "test": examples[10:14]}, llm=tiny_llm)


def _config(method, budget):
  return ml_collections.ConfigDict(dict(
      method=method, seed=0, loop=dict(budget_runs=budget, test_repeats=1),
      peers=dict(lm_max_tokens=6, gepa_max_tokens=6, textgrad_max_tokens=6,
                 mipro_minibatch=2, mipro_candidates=2, mipro_demos=1, textgrad_batch=2)))


@pytest.mark.parametrize("method, budget", [("gepa", 10), ("textgrad", 8),
                                            ("mipro_instructions", 10), ("mipro", 12)])
def test_a_peer_stops_at_the_budget_and_reports_its_parse_failures(task, method, budget,
                                                                  tmp_path):
  assert methods.get(method).iterates                             # capped by compare
  task.system.counters.reset()
  summary = methods.run(task, _config(method, budget), tmp_path)
  assert summary["method"] == method and summary["budget_cap"] == budget
  assert summary["budget_runs"] <= budget
  if method in ("gepa", "textgrad"):
    assert summary["budget_runs"] == budget          # these stop exactly at the cap
  assert summary["test_runs"] == 4 and 0 <= summary["test"] <= 1
  detail = summary["detail"]
  assert detail["outside_loopback"] == []
  # The optimizer's LM is the served model (DSPy answers repeated prompts from its cache).
  assert detail["served"]["generated"] > 0 and detail["parse"]["optimizer_calls"] > 0
  parse = detail["parse"]
  assert parse["system_failures"] == 0
  assert 0 <= parse["optimizer_parse_failures"] <= parse["optimizer_calls"]
  assert "/" in parse_failures([summary])
  assert np.isfinite(summary["val"]) and summary["wall_s"] > 0
  assert (tmp_path / "final_config" / "config.json").exists()
  if method == "mipro":
    assert detail["peer"]["demos"]["writer"] <= 1
  # The one summary schema of every method (loop/harness.py).
  assert tuple(summary) == SUMMARY_KEYS


def test_a_candidate_the_system_refuses_scores_failures_and_costs_nothing(task):
  """GEPA may reflect an empty instruction: a counted failure per example, no run, no crash."""
  from optimas_jax.peers.gepa import SystemGEPAAdapter
  from optimas_jax.peers.program import PromptProgram
  task.system.counters.reset()
  program = PromptProgram(task, seed=0)
  batch = task.splits["train"][:3]
  out = SystemGEPAAdapter(program).evaluate(batch, {"writer": "   "}, capture_traces=True)
  assert out.scores == [task.system.metric.failure_value] * 3 and out.outputs == [None] * 3
  assert program.invalid == 3 and program.refused == 0
  assert task.system.counters.snapshot()["system_runs"] == 0
  scores, traces = program.run(batch, {"writer": "Answer briefly."})
  assert task.system.counters.snapshot()["system_runs"] == 3 and all(t is not None for t in traces)


@pytest.fixture(scope="module")
def sampling_task(tiny_llm):
  """A one-prompt System whose writer samples at T=1: the seeds decide its answers."""
  def write(inputs, prompt, rng):
    outs = llm_calls.chat(tiny_llm, prompt, [x["question"] for x in inputs], 6, 1.0, rng)
    return [{"answer": o} for o in outs]

  writer = osys.Component("writer", "Answer.", ["question"], ["answer"], write,
                          osys.Prompt("Answer the question."))
  metric = osys.Metric(lambda ex, p: float(len(p["answer"]) % 2 == ex["parity"]), ["answer"],
                       name="parity")
  system = osys.System([writer], ["question"], metric)
  examples = [{"question": f"question {i}?", "parity": i % 2} for i in range(12)]
  return Task(system=system, splits={"train": examples[:4], "val": examples[4:8],
                                     "test": examples[8:]}, llm=tiny_llm)


def test_an_example_samples_the_same_whatever_batch_the_peers_put_it_in(sampling_task):
  """DSPy's threads and GEPA's minibatches batch by timing: a run must not depend on it."""
  from optimas_jax.peers.program import PromptProgram
  examples = sampling_task.splits["train"][:3]
  texts = {"writer": "Answer the question."}
  answers = lambda traces: [t.steps["writer"].outputs["answer"] for t in traces]

  together = answers(PromptProgram(sampling_task, seed=0).run(examples, texts)[1])
  program = PromptProgram(sampling_task, seed=0)
  apart = answers(program.run(examples[2:], texts)[1] + program.run(examples[1::-1], texts)[1])
  assert apart == [together[2], together[1], together[0]]
  assert len(set(together)) > 1
  # A second run of the same candidate on an example is a new sample; another
  # candidate's first run of it shares its seed (common random numbers).
  (again,) = program.run(examples[:1], texts)[1]
  assert again.seed != program.run(examples[:1], {"writer": "Reply."})[1][0].seed
  first_seed = PromptProgram(sampling_task, seed=0).run(examples[:1], texts)[1][0].seed
  assert program.run(examples[:1], {"writer": "Answer now."})[1][0].seed == first_seed
