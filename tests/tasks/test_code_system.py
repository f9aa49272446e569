"""The code system: reading code from replies, the test harness's verdicts, the four
components with a scripted LLM, the `:api` variant's setting, and one smoke run of the loop."""

import json
import pathlib
import subprocess
import sys

import pytest

from optimas_jax.llm.base import Generation
from optimas_jax.sandbox import Limits, Sandbox
from optimas_jax.tasks.code import harness, source
from optimas_jax.tasks.code import system as code_system

ROOT = pathlib.Path(__file__).parents[2]
CODE_PROMPT_BCB = "import math\ndef task_func(x):\n"
HEAD = "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n"
STUB = HEAD + '    """Sum of xs.\n    >>> total([1, 2])\n    3\n    """\n'
CHECK = "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n"


@pytest.fixture(scope="module")
def box():
  with Sandbox(Limits(wall_s=4.0, cpu_s=2, memory_bytes=768 << 20, output_bytes=64 << 10,
                      kept_output_bytes=4096), workers=2) as sandbox:
    yield sandbox


# ------------------------------------------------------------------ reading replies

@pytest.mark.parametrize("reply", [
    "Here you go:\n```python\ndef total(xs):\n    return sum(xs)\n```\nDone.",
    "```python\nfrom typing import List\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n",
    "    return sum(xs)\n",                                    # the body only
    "return sum(xs)",                                          # the body, not indented
    "```python\n" + STUB + "    return sum(xs)\n\nprint(total([1, 2, 3]"   # cut mid-line
])
def test_extract_code_finds_a_program_that_defines_the_entry_point(reply):
  code = source.extract_code(reply, HEAD, "total")
  tree = source.parse(code)
  assert tree is not None and source.defines(tree, "total")
  namespace = {}
  exec(compile(code, "<code>", "exec"), namespace)   # our own fixed strings: safe in-process
  assert namespace["total"]([1, 2]) == 3
  assert "List" in namespace                          # the stub's import kept or restored


def test_extract_code_without_code_returns_the_reply_for_the_executor_to_count():
  code = source.extract_code("I think you should add the numbers.", HEAD, "total")
  assert source.syntax_error(code) is not None


@pytest.mark.parametrize("reply, want", [
    ("```python\nassert total([1]) == 1\nassert total([]) == 0\n```", 2),
    ("```python\ndef total(xs):\n    return 0\nassert total([2]) == 2\n```", 1),   # no redefinition
    ("Tests:\nassert total([3]) == 3\nThat is all.\nassert total([1, 1]) == 2", 2),
    ("No idea.", 0),
])
def test_extract_tests_keeps_asserts_and_never_the_entry_point(reply, want):
  tests = source.extract_tests(reply, "total")
  assert tests.count("assert ") == want and "def total" not in tests


# ------------------------------------------------------------------ the harness

UNITTEST = ("import unittest\nclass TestCases(unittest.TestCase):\n"
            "  def test_a(self):\n    self.assertEqual(total([1, 2]), 3)\n"
            "  def test_b(self):\n    self.assertEqual(total([]), 0)\n")
GOOD = HEAD + "    return sum(xs)\n"
WRONG = HEAD + "    return len(xs)\n"
ASSERTS = "".join(f"assert total([{i}]) == {i}\n" for i in range(1, 6)) + "assert total([]) == 1\n"


@pytest.mark.parametrize("job, strict, verdict, counts", [
    (harness.CodeJob(GOOD, CHECK, "total"), True, "passed", (1, 1)),
    (harness.CodeJob(WRONG, CHECK, "total"), True, "failed", (0, 1)),
    (harness.CodeJob(GOOD, UNITTEST, "total"), True, "passed", (2, 2)),
    (harness.CodeJob(WRONG, UNITTEST, "total"), True, "failed", (1, 2)),
    (harness.CodeJob(GOOD, ASSERTS, "total", max_tests=3), False, "passed", (3, 3)),
    (harness.CodeJob(GOOD, ASSERTS, "total"), False, "failed", (5, 6)),
    (harness.CodeJob("def total(xs)\n  return 0\n", CHECK, "total"), True, "syntax_error", (0, 0)),
    (harness.CodeJob("def other(xs):\n  return 0\n", CHECK, "total"), True, "missing_entry_point",
     (0, 0)),
    (harness.CodeJob(GOOD, "METADATA = {}\n", "total"), True, "no_tests", (0, 0)),
    (harness.CodeJob(GOOD, "def check(c)\n", "total"), True, "test_syntax_error", (0, 0)),
    (harness.CodeJob(GOOD, "import no_such_module\n" + CHECK, "total"), True, "error", (0, 0)),
    (harness.CodeJob(GOOD, "from solution import total\n" + ASSERTS, "total", 2), False, "passed",
     (2, 2)),
    (harness.CodeJob("raise ValueError('at import')\n" + GOOD, CHECK, "total"), True, "error",
     (0, 0)),
    (harness.CodeJob("import os\nos._exit(0)\n" + GOOD, CHECK, "total"), True, "error", (0, 0)),
    (harness.CodeJob("import sys\nsys.exit(0)\n" + GOOD, CHECK, "total"), True, "error", (0, 0)),
    # The code's CPU limit ends it inside the judge's one check(): 0 of 1, a timeout.
    (harness.CodeJob(HEAD + "    while True:\n        pass\n", CHECK, "total"), True, "timeout",
     (0, 1)),
])
def test_each_way_code_can_fail_is_a_counted_verdict(box, job, strict, verdict, counts):
  outcome, = harness.run_tests(box, [job], strict)
  assert outcome.verdict == verdict, (outcome.detail, outcome.output)
  assert (outcome.tests_passed, outcome.tests_total) == counts
  head = harness.FEEDBACK[verdict].format(passed=counts[0], total=counts[1])
  assert outcome.feedback(200).splitlines()[0] == head


def test_the_pass_marker_cannot_be_read_from_the_harness_file(box):
  forge = ("import json, os\nspec = json.load(open('harness.json'))\n"
           "print(spec['marker'], json.dumps({'verdict': 'passed', 'passed': 1, 'total': 1, "
           "'detail': ''}))\nos._exit(0)\n")
  outcome, = harness.run_tests(box, [harness.CodeJob(forge + GOOD, CHECK, "total")], True)
  assert outcome.verdict == "error" and "FileNotFoundError" in outcome.detail


def test_humaneval_reference_solutions_pass_and_the_memo_runs_each_code_once(box):
  from optimas_jax.tasks.data import code as code_data
  examples = code_data.load_humaneval().splits["test"][:4]
  hidden = code_system.HiddenTests(box)
  codes = [ex["canonical_solution"] for ex in examples]
  assert all(o.passed for o in hidden.outcomes(examples, codes))
  assert hidden.outcome(examples[0], codes[0]).passed
  assert hidden.outcome(examples[0], "def nothing():\n  pass\n").verdict == "missing_entry_point"
  assert hidden.counts == {"passed": 4, "missing_entry_point": 1}


# ------------------------------------------------------------------ the system

class ScriptedLLM:
  """Replies chosen by the request: the test generator, the final step, else the coder."""

  def __init__(self, code, tests, final):
    self.replies = {"code": code, "tests": tests, "final": final}
    self.requests = []

  def generate(self, requests, params, keys=None):
    out = []
    for r in requests:
      user = r[-1]["content"]
      kind = "tests" if "UNIT TEST CODE" in user else "final" if "Execution result" in user \
          else "code"
      name = next(n for n in self.replies[kind] if f"def {n}(" in user or f"{n}(" in user)
      self.requests.append((kind, user))
      out.append(Generation(self.replies[kind][name], 10, 10, "stop"))
    return out


def _example(name, body_ok):
  head = f"def {name}(xs):\n"
  return {"id": name, "question": head + '    """Sum of xs."""\n', "code_prompt": head,
          "entry_point": name,
          "test": f"def check(candidate):\n    assert candidate([1, 2]) == {3 if body_ok else 4}\n"}


def test_the_four_components_run_and_every_failure_is_counted(box):
  examples = [_example("good", True), _example("fixed", True), _example("prose", True),
              _example("loops", True)]
  llm = ScriptedLLM(
      code={"good": "```python\ndef good(xs):\n    return sum(xs)\n```",
            "fixed": "    return len(xs)\n", "prose": "Just add them up.",
            "loops": "    while True:\n        pass\n"},
      tests={"good": "```python\nassert good([1, 2]) == 3\nassert good([]) == 0\n```",
             "fixed": "assert fixed([1, 2]) == 3", "prose": "assert prose([5]) == 5",
             "loops": "no tests here"},
      final={"good": "```python\ndef good(xs):\n    return sum(xs)\n```",
             "fixed": "```python\ndef fixed(xs):\n    return sum(xs)\n```",
             "prose": "Sorry, I cannot.", "loops": "    while True:\n        pass\n"})
  hidden = code_system.HiddenTests(box)
  system = code_system.build_system(llm, box, hidden, temperature=0.0)
  assert list(system.order) == ["code_generator", "unit_test_generator", "executor",
                                "final_code_generator"]
  config = system.default_config()
  result = system.run(examples, config, seed=0)
  assert result.num_failed == 0, result.failures()
  assert system.evaluate(examples, result).tolist() == [1.0, 1.0, 0.0, 0.0]
  got = {ex["id"]: p["execution_result"] for ex, p in zip(examples, result.predictions)}
  assert got["good"].startswith("passed: 2 of 2") and got["fixed"].startswith("failed: 0 of 1")
  assert got["prose"].startswith("syntax error") and got["loops"].startswith("no tests")
  finals = [user for kind, user in llm.requests if kind == "final"]
  assert any("failed: 0 of 1 tests passed" in u and "fixed([1, 2]) == 3" in u for u in finals)
  extra = {name: fn(examples, result) for name, fn in code_system.extra_metrics(hidden).items()}
  assert extra["initial_pass"] == 0.25 and extra["generated_tests_ran"] == 0.5
  assert extra["final_syntax_error"] == 0.25 and extra["final_timeout"] == 0.25
  # The executor keeps the first test only: the good code now passes 1 of 1.
  one = system.run(examples[:1], config.override(executor={"max_tests": 1}), seed=0)
  assert one.predictions[0]["execution_result"].startswith("passed: 1 of 1")


def test_api_variant_is_the_papers_setting_on_bigcodebench(tmp_path):
  """claude-3-haiku for every LLM step, BigCodeBench in the reference's split, its hidden
  unittest tests through the task's metric (no LLM call: the HTTP backend has its own tests)."""
  import importlib.util

  from optimas_jax.tasks import registry
  from tests.tasks.test_code_data import bigcodebench_row, write_jsonl
  spec = importlib.util.spec_from_file_location("code_exp", ROOT / "experiments" / "code.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("api")
  assert config.llm.backend == "openai" and config.llm.model == "claude-3-haiku-20240307"
  assert config.llm.model in {m for m, _, _ in config.llm.prices}
  assert config.data.name == "bigcodebench" and not config.system.prefill
  assert config.system.max_tokens.code == 1572 and config.system.final_temperature == 0.6
  config.data.path = str(write_jsonl(tmp_path / "bcb.jsonl",
                                     [bigcodebench_row(i) for i in range(12)]))
  config.data.bigcodebench_split.train_size = 8
  config.sandbox.wall_s = 8.0
  task = registry.build(config)
  assert {k: len(v) for k, v in task.splits.items()} == {"train": 7, "val": 1, "test": 4}
  assert list(task.system.specs) == [
      "code_generator", "unit_test_generator", "executor", "final_code_generator"]
  metric = task.system.metric.fn
  examples = task.splits["test"][:2]
  assert [metric(ex, {"code": ex["canonical_solution"]}) for ex in examples] == [1.0, 1.0]
  assert metric(examples[0], {"code": CODE_PROMPT_BCB + "  return x\n"}) == 0.0


def test_code_smoke_run_end_to_end(tmp_path):
  """The smoke config through the Optimas loop (tiny-llama, HumanEval from the package)."""
  proc = subprocess.run([sys.executable, "-m", "optimas_jax.main",
                         "--config=experiments/code.py:smoke", "--config.llm.model=tiny-llama",
                         f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["iterations"] == 2 and summary["test"] == 0.0   # a random tiny model
  assert summary["test_extra"]["failed"] == 0                      # no example crashed the run
  assert summary["test_extra"]["final_timeout"] == 0.0
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any("collect/executor" in r for r in records)
