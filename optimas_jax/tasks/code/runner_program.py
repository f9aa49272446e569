"""Runs inside the sandbox, never imported by the host: the code under test, then its tests.

Reads (and removes) harness.json ({entry_point, kind, max_tests, strict, marker}),
then candidate.py and tests.py from its folder. The code runs as module
"__candidate__" (its `if __name__ == "__main__"` demo does not run); the tests run
statement by statement in the same namespace, never replacing the entry point. The
last line printed is `<marker> {"verdict", "passed", "total", "detail"}`; the exit
code is 0 only on a pass.
"""

import ast
import io
import json
import os
import sys
import traceback
import unittest

SPEC = json.load(open("harness.json"))
os.remove("harness.json")     # the code under test does not get to read the marker from it
DETAIL_CHARS = 1500


def report(verdict, passed=0, total=0, detail=""):
  try:
    sys.stdout.flush()
    sys.stderr.flush()
  except Exception:  # the code under test may have closed them
    pass
  line = json.dumps({"verdict": verdict, "passed": passed, "total": total,
                     "detail": detail[-DETAIL_CHARS:]})
  os.write(1, f"\n{SPEC['marker']} {line}\n".encode())
  os._exit(0 if verdict == "passed" else 1)


def last_error():
  """The current exception with its frames in the code and the tests (not this runner's)."""
  kind, error, tb = sys.exc_info()
  frames = [f for f in traceback.extract_tb(tb) if f.filename in ("candidate.py", "tests.py")]
  lines = traceback.format_list(frames[-3:]) + traceback.format_exception_only(kind, error)
  return "".join(lines).strip()


def run_unittest(ns, names, max_tests):
  suite, count = unittest.TestSuite(), 0
  for name in names:
    cls = ns.get(name)
    if isinstance(cls, type) and issubclass(cls, unittest.TestCase):
      for test in unittest.TestLoader().loadTestsFromTestCase(cls):
        if max_tests and count >= max_tests:
          break
        suite.addTest(test)
        count += 1
  result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
  bad = result.failures + result.errors
  detail = f"{bad[0][0].id()}:\n{bad[0][1]}" if bad else ""
  return result.testsRun - len(bad), result.testsRun, result.wasSuccessful(), detail


def main():
  ns = {"__name__": "__candidate__"}
  try:
    exec(compile(open("candidate.py").read(), "candidate.py", "exec"), ns)
  except BaseException:  # SystemExit too: the code may not end the run
    report("error", detail="the code raised while loading:\n" + last_error())
  entry = SPEC["entry_point"]
  fn = ns.get(entry)
  if not callable(fn):
    report("missing_entry_point", detail=f"the code does not define {entry}()")
  kind, max_tests, strict = SPEC["kind"], SPEC["max_tests"], SPEC["strict"]
  body = [n for n in ast.parse(open("tests.py").read()).body
          if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry)]
  passed = total = 0
  first_failure, setup_errors = "", []
  for node in body:
    is_test = kind == "asserts" and isinstance(node, ast.Assert)
    if is_test and max_tests and total >= max_tests:
      continue
    try:
      exec(compile(ast.Module([node], []), "tests.py", "exec"), ns)
    except BaseException as e:
      if is_test:
        total += 1
        first_failure = first_failure or f"{ast.unparse(node)[:300]}\n-> {type(e).__name__}: {e}"
      elif strict:
        report("error", detail="the tests raised while loading:\n" + last_error())
      else:
        setup_errors.append(f"{ast.unparse(node)[:120]} -> {type(e).__name__}: {e}")
    else:
      passed += is_test
      total += is_test
    ns[entry] = fn
  ok = True
  if kind == "check":
    total = 1
    try:
      ns["check"](fn)
      passed = 1
    except BaseException:
      first_failure = last_error()
  elif kind == "unittest":
    names = [n.name for n in body if isinstance(n, ast.ClassDef)]
    passed, total, ok, first_failure = run_unittest(ns, names, max_tests)
  if total == 0:
    report("no_tests", detail="; ".join(setup_errors))
  detail = "\n".join([first_failure] + setup_errors[:3]).strip()
  report("passed" if ok and passed == total else "failed", passed, total, detail)


main()
