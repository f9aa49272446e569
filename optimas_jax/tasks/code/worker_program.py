"""Runs inside the sandbox beside the judge, never imported by the host: the code under test.

Loads candidate.py as module "__candidate__", tells the judge which names it defines
(functions by name, plain values as data), then answers calls until the judge closes
the pipe: each reply is the returned value as plain data, the raised exception's type
name and message, or why the value cannot cross. This process holds no test, no
verdict and no marker: whatever the code under test does here, the judge only ever
reads plain data from it (plain_data.decode).
"""

import json
import os
import sys
import traceback

import plain_data

CHANNEL = json.load(open("channel.json"))
SEND, RECV = CHANNEL["send"], CHANNEL["recv"]


def last_error():
  kind, error, tb = sys.exc_info()
  frames = [f for f in traceback.extract_tb(tb) if f.filename == "candidate.py"]
  lines = traceback.format_list(frames[-3:]) + traceback.format_exception_only(kind, error)
  return "".join(lines).strip()


def describe(namespace):
  names = {}
  for name, value in list(namespace.items()):
    if name.startswith("__"):
      continue
    if callable(value):
      names[name] = "call"
    else:
      try:
        names[name] = {"data": plain_data.encode(value)}
      except (plain_data.NotPlain, RecursionError):
        pass
  return names


def answer(namespace, message):
  fn = namespace.get(message.get("call"))
  if not callable(fn):
    return {"raise": ["NameError", f"name {message.get('call')!r} is not defined"]}
  try:
    args = plain_data.decode(message["args"])
    kwargs = plain_data.decode(message["kwargs"])
    value = fn(*args, **kwargs)
  except BaseException as e:  # the code's own exception, SystemExit included
    return {"raise": [type(e).__name__, str(e)[:2000]]}
  try:
    return {"value": plain_data.encode(value)}
  except (plain_data.NotPlain, RecursionError) as e:
    return {"not_plain": str(e)[:500]}


def main():
  namespace = {"__name__": "__candidate__"}
  try:
    exec(compile(open("candidate.py").read(), "candidate.py", "exec"), namespace)
  except BaseException:  # SystemExit too: the code may not end the run
    plain_data.send(SEND, {"hello": {"error": last_error()}})
    return
  plain_data.send(SEND, {"hello": {"names": describe(namespace)}})
  while True:
    message = plain_data.receive(RECV)
    if message is None:
      return
    plain_data.send(SEND, answer(namespace, message))


main()
os._exit(0)
