"""Plain data across the grader's pipe: the only values the code under test can hand the judge.

Shipped as a file into both sandboxed programs (judge_program.py, worker_program.py)
and importable by the host for tests; stdlib only (numpy when present). `encode`
accepts exact builtin types (None, bool, int, float, complex, str, bytes, list, tuple,
set, frozenset, dict) and numpy arrays and scalars of plain dtypes; anything else,
subclasses included (an int whose __eq__ is always True), raises NotPlain. `decode`
builds values of those types only, from JSON the judge parsed itself, so nothing the
code under test sends can run code or carry its own comparison in the judge.
Messages are framed as a 4-byte length and UTF-8 JSON.
"""

import json
import math
import os
import struct

MAX_DEPTH = 100
MAX_MESSAGE_BYTES = 16 << 20
_PLAIN_DTYPE_KINDS = "biufcU"          # bool, int, uint, float, complex, unicode


class NotPlain(TypeError):
  """A value that may not cross from the code under test to the judge."""


def _numpy():
  try:
    import numpy
    return numpy
  except ImportError:
    return None


def encode(value, depth=0):
  kind = type(value)
  if value is None or kind is bool or kind is str:
    return value
  if kind is int:
    return value if value.bit_length() < 4000 else {"int": hex(value)}
  if kind is float:
    return value if math.isfinite(value) else {"float": repr(value)}
  if depth >= MAX_DEPTH:
    raise NotPlain(f"the value is nested deeper than {MAX_DEPTH} levels")
  if kind in (list, tuple, set, frozenset):
    items = sorted(value, key=repr) if kind in (set, frozenset) else value
    return {kind.__name__: [encode(v, depth + 1) for v in items]}
  if kind is dict:
    return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
  if kind is bytes:
    return {"bytes": value.hex()}
  if kind is complex:
    return {"complex": [encode(value.real), encode(value.imag)]}
  np = _numpy() if kind.__module__ == "numpy" else None
  if np is not None and (kind is np.ndarray or isinstance(value, np.generic)) \
      and value.dtype.kind in _PLAIN_DTYPE_KINDS:
    body = {"dtype": value.dtype.str, "data": encode(value.tolist(), depth + 1)}
    if kind is np.ndarray:
      return {"ndarray": {**body, "shape": list(value.shape)}}
    return {"npscalar": body}
  raise NotPlain(f"a {kind.__module__}.{kind.__qualname__} is not plain data (return "
                 "numbers, strings, bytes, lists, tuples, sets, dicts or numpy arrays)")


def decode(obj, depth=0):
  """The value `encode` described; ValueError for anything else."""
  kind = type(obj)
  if obj is None or kind in (bool, int, float, str):
    return obj
  if depth > MAX_DEPTH + 2 or kind is not dict or len(obj) != 1:
    raise ValueError("not plain data")
  (tag, body), = obj.items()
  if tag in ("list", "tuple", "set", "frozenset") and type(body) is list:
    items = [decode(v, depth + 1) for v in body]
    return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
  if tag == "dict" and type(body) is list:
    out = {}
    for pair in body:
      if type(pair) is not list or len(pair) != 2:
        raise ValueError("not plain data")
      out[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
    return out
  if tag == "bytes" and type(body) is str:
    return bytes.fromhex(body)
  if tag == "int" and type(body) is str:
    return int(body, 16)
  if tag == "float" and body in ("nan", "inf", "-inf"):
    return float(body)
  if tag == "complex" and type(body) is list and len(body) == 2:
    return complex(float(decode(body[0])), float(decode(body[1])))
  if tag in ("ndarray", "npscalar") and type(body) is dict:
    np = _numpy()
    dtype = np.dtype(str(body["dtype"])) if np is not None else None
    if dtype is None or dtype.kind not in _PLAIN_DTYPE_KINDS:
      raise ValueError("not plain data")
    data = decode(body["data"], depth + 1)
    if tag == "npscalar":
      return dtype.type(data)
    return np.array(data, dtype=dtype).reshape([int(n) for n in body["shape"]])
  raise ValueError("not plain data")


def send(fd: int, message: dict) -> None:
  data = json.dumps(message).encode()
  data = struct.pack(">I", len(data)) + data
  while data:
    data = data[os.write(fd, data):]


def _read_exactly(fd: int, n: int):
  chunks, got = [], 0
  while got < n:
    chunk = os.read(fd, min(n - got, 1 << 20))
    if not chunk:
      return None
    chunks.append(chunk)
    got += len(chunk)
  return b"".join(chunks)


def receive(fd: int):
  """The next message (a dict), or None at the end of the stream. ValueError when what
  arrived is not a well-formed message."""
  head = _read_exactly(fd, 4)
  if head is None:
    return None
  size, = struct.unpack(">I", head)
  if size > MAX_MESSAGE_BYTES:
    raise ValueError(f"a message of {size} bytes (at most {MAX_MESSAGE_BYTES})")
  body = _read_exactly(fd, size)
  if body is None:
    return None
  try:
    message = json.loads(body)
  except (ValueError, RecursionError) as e:
    raise ValueError(f"a message that is not JSON: {e}") from None
  if type(message) is not dict:
    raise ValueError("a message that is not an object")
  return message
