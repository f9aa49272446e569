"""A DSPy adapter that formats and parses the way our components do.

DSPy's default adapters ask the model for "[[ ## answer ## ]]" field markers
(ChatAdapter) or a JSON object (JSONAdapter); SmolLM2-135M writes neither,
so a DSPy run over it measures parsing, not optimization. `OptimasAdapter`
sends what an optimas_jax component sends:

  system     the signature's instructions (the component's prompt)
  user       one input field: its value as is (a list as "- item" lines);
             several: "Field: value" blocks
  reply      one output field: the first non-empty line (a leading "Field:"
             label dropped); several: one "Field: value" line each

Few-shot demos are user/assistant turns in the same format. Every adapter
here counts its calls and its parse failures (`parse_stats`), so a method's
parse failures can be reported next to its score; `CountingChatAdapter` is
DSPy's own ChatAdapter with the same counts, for a served model that can
follow it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from optimas_jax.peers import env

dspy = env.require("dspy", what="optimas_jax.peers.dspy_adapter")
from dspy.adapters.utils import parse_value  # noqa: E402
from dspy.utils.exceptions import AdapterParseError  # noqa: E402


class ParseCounting:
  """Counts LM calls and parse failures of an adapter (thread-safe); mix in before the adapter."""

  def _counts(self):
    if not hasattr(self, "_count_lock"):
      self._count_lock = threading.Lock()
      self._calls = self._failures = 0
    return self._count_lock

  def _count(self, failed: bool) -> None:
    with self._counts():
      self._calls += 1
      self._failures += int(failed)

  def parse_stats(self) -> dict[str, int]:
    with self._counts():
      return {"calls": self._calls, "parse_failures": self._failures}

  def reset_parse_stats(self) -> None:
    with self._counts():
      self._calls = self._failures = 0

  def __call__(self, *args, **kwargs):
    try:
      out = super().__call__(*args, **kwargs)
    except AdapterParseError:
      self._count(True)
      raise
    self._count(False)
    return out

  async def acall(self, *args, **kwargs):
    try:
      out = await super().acall(*args, **kwargs)
    except AdapterParseError:
      self._count(True)
      raise
    self._count(False)
    return out


def _label(name: str) -> str:
  return name.replace("_", " ").strip().capitalize()


def _value_text(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return "\n".join(f"- {v}" for v in value)
  return str(value)


class OptimasAdapter(ParseCounting, dspy.Adapter):
  """Formats and parses like an optimas_jax component (see the module docstring).

  `first_line=False` keeps the whole reply of a single output field (for
  long-text outputs such as an optimizer's proposed instruction).
  """

  def __init__(self, first_line: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.first_line = first_line

  # ------------------------------------------------------------- format

  def format(self, signature, demos, inputs):
    messages = [{"role": "system", "content": signature.instructions}]
    for demo in demos:
      if all(demo.get(k) is not None for k in signature.fields):
        messages.append({"role": "user", "content": self.format_inputs(signature, demo)})
        messages.append({"role": "assistant", "content": self.format_outputs(signature, demo)})
    messages.append({"role": "user", "content": self.format_inputs(signature, inputs)})
    return messages

  def format_inputs(self, signature, values: dict) -> str:
    names = [n for n in signature.input_fields if n in values]
    if len(names) == 1:
      text = _value_text(values[names[0]])
    else:
      text = "\n\n".join(
          f"{_label(n)}:\n{_value_text(values[n])}" if isinstance(values[n], (list, tuple))
          else f"{_label(n)}: {_value_text(values[n])}" for n in names)
    outputs = list(signature.output_fields)
    if len(outputs) > 1:
      text += "\n\nReply in this form:\n" + "\n".join(f"{_label(n)}: ..." for n in outputs)
    return text

  def format_outputs(self, signature, values: dict) -> str:
    outputs = list(signature.output_fields)
    if len(outputs) == 1:
      return _value_text(values[outputs[0]])
    return "\n".join(f"{_label(n)}: {_value_text(values[n])}" for n in outputs)

  # Few-shot demos and conversation history go through these two.
  def format_user_message_content(self, signature, inputs, prefix="", suffix="",
                                  main_request=False):
    return "\n\n".join(t for t in (prefix, self.format_inputs(signature, inputs), suffix) if t)

  def format_assistant_message_content(self, signature, outputs, missing_field_message=None):
    return self.format_outputs(signature, {n: outputs.get(n, missing_field_message)
                                           for n in signature.output_fields})

  # -------------------------------------------------------------- parse

  def parse(self, signature, completion: str) -> dict[str, Any]:
    outputs = signature.output_fields
    text = (completion or "").strip()
    if len(outputs) == 1:
      (name, field), = outputs.items()
      lines = [l.strip() for l in text.splitlines() if l.strip()]
      raw = (lines[0] if self.first_line else text) if lines else ""
      raw = _strip_label(raw, name)
      if not raw:
        raise AdapterParseError("OptimasAdapter", signature, completion,
                                f"the reply has no text for the field {name!r}")
      return {name: self._value(signature, name, field, raw, completion)}
    found = {}
    for line in text.splitlines():
      for name in outputs:
        m = re.match(rf"^\W*({re.escape(name)}|{re.escape(_label(name))})\W*:\s*(.+)$",
                     line.strip(), flags=re.I)
        if m and name not in found:
          found[name] = m.group(2).strip()
    missing = [n for n in outputs if n not in found]
    if missing:
      raise AdapterParseError("OptimasAdapter", signature, completion,
                              f"no '{_label(missing[0])}: ...' line for {missing}",
                              parsed_result=found)
    return {n: self._value(signature, n, outputs[n], found[n], completion) for n in outputs}

  @staticmethod
  def _value(signature, name, field, raw: str, completion: str):
    try:
      return parse_value(raw, field.annotation)
    except Exception as e:  # pylint: disable=broad-except
      raise AdapterParseError("OptimasAdapter", signature, completion,
                              f"field {name!r}: {raw!r} is not a {field.annotation}: {e}") from None


def _strip_label(text: str, name: str) -> str:
  m = re.match(rf"^\W*({re.escape(name)}|{re.escape(_label(name))})\s*:\s*", text, flags=re.I)
  return text[m.end():].strip() if m else text.strip()


class CountingChatAdapter(ParseCounting, dspy.ChatAdapter):
  """DSPy's own ChatAdapter (with its JSON fallback), counting calls and parse failures."""


ADAPTERS = {"optimas": OptimasAdapter, "chat": CountingChatAdapter}


def make_adapter(name: str, **kwargs):
  if name not in ADAPTERS:
    raise ValueError(f"adapter {name!r}: choose one of {sorted(ADAPTERS)} ('optimas' formats "
                     "and parses like our components; 'chat' is DSPy's default)")
  return ADAPTERS[name](**kwargs)
