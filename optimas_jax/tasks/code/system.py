"""The paper's BigCodeBench system, four components:

  code_generator (prompt) ------> initial_code ----\
                                                    executor (max_tests) -> execution_result
  unit_test_generator (prompt) -> generated_tests --/            |
                                                                 v
                                 final_code_generator (prompt; sees the code, the tests and
                                 the execution result) -> code

The executor runs the candidate code against the generated tests in the
sandbox (optimas_jax/sandbox); its hyperparameter is how many generated tests
it keeps. Metric: pass rate of the final code on each task's hidden tests,
run through the same sandbox and memoised by (task, code). Every way a
program can fail (syntax error, missing entry point, an exception, a timeout,
a crash) is a counted verdict (`harness.VERDICTS`), never a crash of the run.

Prompts follow the reference (snap-stanford/optimas
examples/systems/bigcodebench/four_components.py): the code generator's
instruction prefix, the task in a fence, "UNIT TEST CODE:" after the test
generator's request, "Refine code based on test results." for the final
step. The reference's unit-test prompt is a copy of a code-writing prompt
(it asks to complete the function) and its executor returns only 0/1; here
the test generator is asked for asserts and the executor reports which
tests failed and how.
"""

from __future__ import annotations

import collections
import hashlib
import threading

import numpy as np

from optimas_jax import system as osys
from optimas_jax.sandbox import STATUSES
from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.code import harness, source

SYSTEM_PROMPT = "You are an expert Python programmer."
CODE_PROMPT = "Provide a self-contained Python solution:"
TEST_PROMPT = ("Write unit tests for the function below: Python assert statements that call "
               "it on concrete inputs and compare with the expected outputs.")
FINAL_PROMPT = "Refine code based on test results."

HINTS = {
    "code_generator": ("Reply with one ```python block that defines the complete function.",
                       "Keep the function's name and signature exactly as given.",
                       "Handle empty inputs and edge cases."),
    "unit_test_generator": ("Reply with three to five assert statements only.",
                            "Take the expected outputs from the examples in the docstring.",
                            "Call the function by its exact name."),
    "final_code_generator": ("If every test passed, repeat the initial code unchanged.",
                             "Fix the first failing test without breaking the others.",
                             "Reply with the complete corrected function in one python block."),
}


def code_user(prompt: str, x: dict) -> str:
  return f"{prompt}\n```\n{x['question'].strip()}\n```\n"


def tests_user(prompt: str, x: dict) -> str:
  return f"{prompt}\n```\n{x['question'].strip()}\n```\n\nUNIT TEST CODE:\n"


def stub(x: dict) -> str:
  """The code a solution continues: the whole question when it is the function's stub
  (HumanEval: signature and docstring), else the code prompt (BigCodeBench)."""
  return x["question"] if x["question"].startswith(x["code_prompt"]) else x["code_prompt"]


def prefills(kind: str, inputs) -> list[str]:
  """How a local model's replies begin: code starts as the stub's continuation, tests as an
  assert on the entry point."""
  if kind == "tests":
    return [f"```python\nassert {x['entry_point']}(" for x in inputs]
  return [f"```python\n{stub(x)}" for x in inputs]


def final_user(prompt: str, x: dict) -> str:
  tests = x["generated_tests"].strip() or "(none)"
  return (f"{prompt}\n\nProblem:\n```\n{x['question'].strip()}\n```\n\n"
          f"Initial code:\n```python\n{x['initial_code'].strip()}\n```\n\n"
          f"Unit tests:\n```python\n{tests}\n```\n\n"
          f"Execution result:\n{x['execution_result']}\n\n"
          "Reply with the complete improved code in one ```python block.")


class HiddenTests:
  """Each task's hidden tests on a piece of code: one sandbox run per distinct
  (task, code), memoised; `counts` holds the verdict of every run."""

  def __init__(self, sandbox, memo_size: int = 16384):
    self.sandbox = sandbox
    self.memo_size = memo_size
    self._memo: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()
    self.counts: collections.Counter = collections.Counter()

  @staticmethod
  def _key(example: dict, code: str) -> str:
    return hashlib.blake2b(f"{example['id']}\0{code}".encode(), digest_size=16).hexdigest()

  def outcomes(self, examples, codes) -> list[harness.Outcome]:
    """Outcomes in order; the ones not memoised run concurrently."""
    keys = [self._key(ex, code) for ex, code in zip(examples, codes)]
    with self._lock:
      known = {k: self._memo[k] for k in keys if k in self._memo}
    todo = {k: i for i, k in enumerate(keys) if k not in known}
    jobs = [harness.CodeJob(codes[i], examples[i]["test"], examples[i]["entry_point"])
            for i in todo.values()]
    known.update(zip(todo, harness.run_tests(self.sandbox, jobs, strict=True)))
    with self._lock:
      for key in todo:
        self.counts[known[key].verdict] += 1
      for key in keys:
        self._memo[key] = known[key]
        self._memo.move_to_end(key)
      while len(self._memo) > self.memo_size:
        self._memo.popitem(last=False)
    return [known[k] for k in keys]

  def outcome(self, example: dict, code: str) -> harness.Outcome:
    return self.outcomes([example], [code])[0]


def make_components(llm, sandbox, temperature: float, final_temperature: float,
                    max_tokens: dict, feedback_chars: int, test_choices,
                    prefill: bool) -> list[osys.Component]:

  def begin(kind, inputs):
    return prefills(kind, inputs) if prefill else None

  def generate_code(inputs, prompt, rng):
    replies = llm_calls.chat(llm, SYSTEM_PROMPT, [code_user(prompt, x) for x in inputs],
                             max_tokens["code"], temperature, rng, begin("code", inputs))
    return [{"initial_code": source.extract_code(r, x["code_prompt"], x["entry_point"])}
            for r, x in zip(replies, inputs)]

  def generate_tests(inputs, prompt, rng):
    replies = llm_calls.chat(llm, SYSTEM_PROMPT, [tests_user(prompt, x) for x in inputs],
                             max_tokens["tests"], temperature, rng, begin("tests", inputs))
    return [{"generated_tests": source.extract_tests(r, x["entry_point"])}
            for r, x in zip(replies, inputs)]

  def execute(inputs, hp, rng):
    jobs = [harness.CodeJob(x["initial_code"], x["generated_tests"], x["entry_point"],
                            hp["max_tests"]) for x in inputs]
    outcomes = harness.run_tests(sandbox, jobs, strict=False)
    return [{"execution_result": o.feedback(feedback_chars)} for o in outcomes]

  def refine(inputs, prompt, rng):
    replies = llm_calls.chat(llm, SYSTEM_PROMPT, [final_user(prompt, x) for x in inputs],
                             max_tokens["final"], final_temperature, rng,
                             begin("final", inputs))
    return [{"code": source.extract_code(r, x["code_prompt"], x["entry_point"])}
            for r, x in zip(replies, inputs)]

  task = ["question", "code_prompt", "entry_point"]
  return [
      osys.Component("code_generator", "Generate a Python solution for the coding problem.",
                     task, ["initial_code"], generate_code, osys.Prompt(CODE_PROMPT),
                     deterministic=temperature == 0),
      osys.Component("unit_test_generator",
                     "Generate Python unit tests that check a solution to the coding problem.",
                     ["question", "entry_point"], ["generated_tests"], generate_tests,
                     osys.Prompt(TEST_PROMPT), deterministic=temperature == 0),
      osys.Component("executor",
                     "Run the code against the generated unit tests and report the result.",
                     ["initial_code", "generated_tests", "entry_point"], ["execution_result"],
                     execute,
                     osys.Hyperparameters({"max_tests": osys.Choice(tuple(test_choices))},
                                          {"max_tests": test_choices[-1]}),
                     deterministic=True),
      osys.Component("final_code_generator", "Refine the code based on the test results.",
                     task + ["initial_code", "generated_tests", "execution_result"], ["code"],
                     refine, osys.Prompt(FINAL_PROMPT), deterministic=final_temperature == 0),
  ]


def build_system(llm, sandbox, hidden: HiddenTests, temperature: float = 0.6,
                 final_temperature: float = 0.0, max_tokens: dict | None = None,
                 feedback_chars: int = 600, test_choices=(1, 3, 10),
                 prefill: bool = False) -> osys.System:
  max_tokens = dict(max_tokens or {"code": 192, "tests": 128, "final": 192})
  metric = osys.Metric(lambda ex, pred: float(hidden.outcome(ex, pred["code"]).passed),
                       ["code"], name="pass_rate", failure_value=0.0)
  return osys.System(make_components(llm, sandbox, temperature, final_temperature, max_tokens,
                                     feedback_chars, test_choices, prefill),
                     ["question", "code_prompt", "entry_point"], metric)


def extra_metrics(hidden: HiddenTests) -> dict:
  """Test-time shares (the initial code's pass rate, tests run, how the final code failed)
  and the job's sandbox runs so far by status."""

  def rows(examples, result, field):
    kept = [(ex, p[field]) for ex, p in zip(examples, result.predictions) if p is not None]
    return hidden.outcomes([ex for ex, _ in kept], [c for _, c in kept]) if kept else []

  def share_of(verdict):
    def share(examples, result):
      return float(sum(o.verdict == verdict for o in rows(examples, result, "code"))
                   / max(len(examples), 1))
    return share

  def initial_pass(examples, result):
    return float(sum(o.passed for o in rows(examples, result, "initial_code"))
                 / max(len(examples), 1))

  not_run = tuple(harness.FEEDBACK[v] for v in harness.NOT_RUN)

  def tests_ran(examples, result):
    ran = [p is not None and not p["execution_result"].startswith(not_run)
           for p in result.predictions]
    return float(np.mean(ran)) if ran else 0.0

  def sandbox_total(status):
    return lambda examples, result: float(hidden.sandbox.stats().get(status, 0))

  metrics = {"initial_pass": initial_pass, "generated_tests_ran": tests_ran}
  for verdict in ("syntax_error", "missing_entry_point", "error", "timeout", "crashed"):
    metrics[f"final_{verdict}"] = share_of(verdict)
  for status in STATUSES:             # every sandbox run of the job so far, by status
    metrics[f"sandbox_{status}"] = sandbox_total(status)
  return metrics
