"""Runs inside the sandbox, never imported by the host: the tests, against the code under test
running in another sandbox (worker_program.py), joined only by two pipes.

Reads (and removes) harness.json ({entry_point, kind, max_tests, strict, marker}) and
runs tests.py here, where the code under test cannot reach: the tests, the test
framework, the counts and the marker live in this process. Each name the code defines
is a stub here whose calls cross the pipe; what comes back is plain data
(plain_data.decode), an exception of a builtin type rebuilt from its name and message,
or a CandidateError. The tests run statement by statement, never replacing the entry
point. The last line printed is `<marker> {"verdict", "passed", "total", "detail"}`;
the exit code is 0 only on a pass.
"""

import ast
import builtins
import io
import json
import os
import sys
import traceback
import unittest

import plain_data

SPEC = json.load(open("harness.json"))
os.remove("harness.json")
CHANNEL = json.load(open("channel.json"))
SEND, RECV = CHANNEL["send"], CHANNEL["recv"]
DETAIL_CHARS = 1500
# Exceptions of the code under test rebuilt here by name. Never StopIteration (it would end
# a map() in the tests early) nor anything outside Exception.
_REBUILT = {name: cls for name, cls in vars(builtins).items()
            if isinstance(cls, type) and issubclass(cls, Exception)
            and not issubclass(cls, (StopIteration, StopAsyncIteration, Warning))}


class CandidateError(Exception):
  """The code under test failed in a way no builtin exception names, or went away."""


class _Channel:
  gone = ""

  def call(self, name, args, kwargs):
    if self.gone:
      raise CandidateError(self.gone)
    try:
      message = {"call": name, "args": plain_data.encode(list(args)),
                 "kwargs": plain_data.encode(dict(kwargs))}
    except plain_data.NotPlain as e:
      raise CandidateError(f"the tests passed a value that cannot cross to the code: {e}")
    try:
      plain_data.send(SEND, message)
      reply = plain_data.receive(RECV)
    except (OSError, ValueError) as e:
      reply, self.gone = None, f"the code under test broke the channel: {e}"
    if reply is None:
      self.gone = self.gone or "the code under test exited"
      raise CandidateError(self.gone)
    if "value" in reply:
      try:
        return plain_data.decode(reply["value"])
      except (ValueError, TypeError, KeyError, RecursionError, OverflowError):
        raise CandidateError(f"{name}() returned something that is not plain data") from None
    if "raise" in reply and type(reply["raise"]) is list and len(reply["raise"]) == 2:
      kind, text = (str(v)[:2000] for v in reply["raise"])
      raise _REBUILT.get(kind, CandidateError)(text if kind in _REBUILT else f"{kind}: {text}")
    if "not_plain" in reply:
      raise CandidateError(f"{name}() returned {str(reply['not_plain'])[:300]}")
    raise CandidateError(f"{name}(): an answer that is not one")


CHANNEL_TO_CODE = _Channel()


def stub(name):
  def call(*args, **kwargs):
    return CHANNEL_TO_CODE.call(name, args, kwargs)
  call.__name__ = call.__qualname__ = name
  return call


def report(verdict, passed=0, total=0, detail=""):
  try:
    sys.stdout.flush()
    sys.stderr.flush()
  except Exception:
    pass
  line = json.dumps({"verdict": verdict, "passed": passed, "total": total,
                     "detail": detail[-DETAIL_CHARS:]})
  os.write(1, f"\n{SPEC['marker']} {line}\n".encode())
  os._exit(0 if verdict == "passed" else 1)


def last_error():
  """The current exception with its frames in the tests (not this judge's)."""
  kind, error, tb = sys.exc_info()
  frames = [f for f in traceback.extract_tb(tb) if f.filename == "tests.py"]
  lines = traceback.format_list(frames[-3:]) + traceback.format_exception_only(kind, error)
  return "".join(lines).strip()


def hello():
  """The names the code defines, or a verdict when it never got that far."""
  try:
    message = plain_data.receive(RECV)
  except (OSError, ValueError) as e:
    report("error", detail=f"the code under test broke the channel: {e}")
  if message is None or type(message.get("hello")) is not dict:
    report("error", detail="the code ended before its tests ran")
  if "error" in message["hello"]:
    report("error", detail="the code raised while loading:\n" + str(message["hello"]["error"]))
  names = message["hello"].get("names")
  return names if type(names) is dict else {}


def namespace_of(names):
  ns = {"__name__": "__tests__"}
  for name, kind in names.items():
    if type(name) is not str or not name.isidentifier():
      continue
    if kind == "call":
      ns[name] = stub(name)
    elif type(kind) is dict and "data" in kind:
      try:
        ns[name] = plain_data.decode(kind["data"])
      except (ValueError, TypeError, KeyError, RecursionError, OverflowError):
        pass
  return ns


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
  names = hello()
  entry = SPEC["entry_point"]
  if names.get(entry) != "call":
    report("missing_entry_point", detail=f"the code does not define {entry}()")
  ns = namespace_of(names)
  fn = ns[entry]
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
    class_names = [n.name for n in body if isinstance(n, ast.ClassDef)]
    passed, total, ok, first_failure = run_unittest(ns, class_names, max_tests)
  if total == 0:
    report("no_tests", detail="; ".join(setup_errors))
  detail = "\n".join([first_failure] + setup_errors[:3]).strip()
  report("passed" if ok and passed == total else "failed", passed, total, detail)


main()
