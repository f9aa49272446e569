"""The text an LRF reads, tokenized once, truncated with the output kept last.

A text is the template filled with the component description, its input
fields and its output fields. Over `max_len`, the inputs are shortened first
(from the middle, longest first), then the description: a right-truncated
long input would drop the output, chosen and rejected would become the same
text and the LRF would learn nothing (see OPTIMAS.md). Only when the output
alone does not fit is the output itself cut from the middle (head, ellipsis,
tail), as a last resort: no text is refused for length. Every truncation is
counted in `TextEncoder.stats`.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Callable, Sequence

import numpy as np

from optimas_jax.lrf.config import DEFAULT_FIELD_TEMPLATE, DEFAULT_TEMPLATE

Fields = Sequence[tuple[str, str]]
ELLIPSIS = " ... "


def token_fn(tokenizer) -> tuple[Callable[[str], list[int]], list[int], list[int]]:
  """(ids_without_specials, prefix_specials, suffix_specials) for a tokenizer.

  Accepts the registry's `TextTokenizer` (uses its inner `tokenizers.Tokenizer`,
  its `add_bos`/`bos_id` and `max_id` clipping) or a bare `tokenizers.Tokenizer`.
  Specials are found by diffing encodings with and without them.
  """
  import tokenizers  # pylint: disable=import-outside-toplevel
  wrapper = None if isinstance(tokenizer, tokenizers.Tokenizer) else tokenizer
  tok = tokenizer if wrapper is None else wrapper.tokenizer
  # A private copy without truncation/padding: the registry enables
  # truncation, which would cut segments before the middle-cut here can.
  tok = tokenizers.Tokenizer.from_str(tok.to_str())
  tok.no_truncation()
  tok.no_padding()
  max_id = getattr(wrapper, "max_id", None)
  if max_id is not None:
    special = [i for i in tok.get_added_tokens_decoder() if i <= max_id]
    low = max(special, default=-1) + 1   # fold into [low, max_id]: never a special

  def encode(text, specials):
    ids = tok.encode(text, add_special_tokens=specials).ids
    if max_id is None:
      return list(ids)
    # Tiny test vocabularies: fold ids instead of clipping them (clipping
    # maps nearly every word to max_id, so all candidates look the same).
    return [i if i <= max_id else low + i % (max_id + 1 - low) for i in ids]

  plain, full = encode("x", False), encode("x", True)
  prefix, suffix = [], []
  for i in range(len(full) - len(plain) + 1):
    if full[i:i + len(plain)] == plain:
      prefix, suffix = full[:i], full[i + len(plain):]
      break
  bos = getattr(wrapper, "bos_id", None)
  if getattr(wrapper, "add_bos", False) and bos is not None and prefix[:1] != [bos]:
    prefix = [bos] + prefix
  return (lambda t: encode(t, False)), prefix, suffix


def _cut_middle(ids: list[int], keep: int, ellipsis: list[int]) -> list[int]:
  """Keep `keep` tokens: head and tail around an ellipsis (if it fits)."""
  if keep >= len(ids):
    return ids
  if keep <= len(ellipsis):
    return ids[:keep]
  body = keep - len(ellipsis)
  head = (body + 1) // 2
  return ids[:head] + ellipsis + ids[len(ids) - (body - head):]


def _water_fill(lengths: list[int], budget: int) -> list[int]:
  """Largest cap c with sum(min(l, c)) <= budget; returns per-item keeps."""
  if sum(lengths) <= budget:
    return list(lengths)
  lo, hi = 0, max(lengths)
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if sum(min(l, mid) for l in lengths) <= budget:
      lo = mid
    else:
      hi = mid - 1
  keeps = [min(l, lo) for l in lengths]
  # Hand out the remainder one token at a time to the longest-cut items.
  spare = budget - sum(keeps)
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    if spare <= 0:
      break
    if keeps[i] < lengths[i]:
      keeps[i] += 1
      spare -= 1
  return keeps


def text_key(ids: np.ndarray) -> bytes:
  """Stable hash of a token sequence (cache key)."""
  return hashlib.blake2b(np.asarray(ids, np.int32).tobytes(),
                         digest_size=16).digest()


class TextEncoder:
  """Renders and tokenizes (component, inputs, outputs) with explicit truncation.

  Segments are tokenized separately and cached, so an input shared by all
  candidates of a group is tokenized once.
  """

  def __init__(self, tokenizer, descriptions: Sequence[str], max_len: int,
               template: str = DEFAULT_TEMPLATE,
               field_template: str = DEFAULT_FIELD_TEMPLATE):
    self.descriptions = list(descriptions)
    self.max_len = max_len
    self._ids, self._prefix, self._suffix = token_fn(tokenizer)
    self._seg_cache: dict[str, list[int]] = {}
    self._text_cache: dict[tuple, np.ndarray] = {}
    self._ellipsis = self._ids(ELLIPSIS)
    self.stats = collections.Counter()
    pre, sep, post = template.partition("{description}")
    if not sep:
      raise ValueError("config.lrf.template: missing {description}")
    if not 0 <= post.find("{inputs}") < post.find("{outputs}"):
      raise ValueError("config.lrf.template: expected {description}, then "
                       "{inputs}, then {outputs}, each once")
    self._tpl = (pre, post)
    if "{value}" not in field_template or "{field}" not in field_template:
      raise ValueError("config.lrf.field_template: needs {field} and {value}")
    self._field_tpl = field_template.split("{value}", 1)

  def _seg(self, text: str) -> list[int]:
    ids = self._seg_cache.get(text)
    if ids is None:
      ids = self._seg_cache[text] = self._ids(text) if text else []
    return ids

  def _fields(self, fields: Fields) -> list[tuple[list[int], list[int], list[int]]]:
    pre, post = self._field_tpl
    return [(self._seg(pre.format(field=f)), self._seg(str(v)),
             self._seg(post.format(field=f))) for f, v in fields]

  def encode(self, component: int, inputs: Fields, outputs: Fields) -> np.ndarray:
    """Token ids (int32, <= max_len) with specials; cached per text."""
    key = (component, tuple(map(tuple, inputs)), tuple(map(tuple, outputs)))
    hit = self._text_cache.get(key)
    if hit is not None:
      return hit
    ids = self._render(component, inputs, outputs)
    self._text_cache[key] = ids
    return ids

  def _render(self, component, inputs, outputs) -> np.ndarray:
    self.stats["texts"] += 1
    pre, post = self._tpl
    before_desc = self._seg(pre)
    desc = self._seg(self.descriptions[component])
    mid, _, tail = post.partition("{inputs}")
    between, _, after = tail.partition("{outputs}")
    mid_ids, between_ids, after_ids = self._seg(mid), self._seg(between), self._seg(after)
    ins, outs = self._fields(inputs), self._fields(outputs)

    budget = self.max_len - len(self._prefix) - len(self._suffix)
    # What is never cut: template text and field names.
    skeleton = (len(before_desc) + len(mid_ids) + len(between_ids) + len(after_ids)
                + sum(len(a) + len(c) for a, _, c in ins + outs))
    if skeleton > budget:
      raise ValueError(
          f"config.lrf.max_len={self.max_len}: the template and field names alone "
          f"need {skeleton} tokens plus specials; raise config.lrf.max_len or "
          "shorten config.lrf.template / config.lrf.field_template")
    room = budget - skeleton
    # The output takes the room it needs; only an output longer than all the
    # room there is gets cut (the last resort), leaving none for the inputs.
    out_full = [b for _, b, _ in outs]
    out_values = self._shorten(out_full, room, "output")
    truncated = out_values is not out_full
    in_room = room - sum(map(len, out_values))
    # Then the inputs (from the middle, longest first); the description only
    # if the inputs cannot make room by themselves.
    in_values = [b for _, b, _ in ins]
    if len(desc) + sum(map(len, in_values)) > in_room:
      truncated = True
      in_values = self._shorten(in_values, max(in_room - len(desc), 0), "input")
      desc_room = in_room - sum(map(len, in_values))
      if desc_room < len(desc):
        self.stats["truncated_descriptions"] += 1
        desc = _cut_middle(desc, desc_room, self._ellipsis)
    if truncated:
      self.stats["truncated_texts"] += 1
    in_ids = [i for (a, _, c), v in zip(ins, in_values) for i in a + v + c]
    out_ids = [i for (a, _, c), v in zip(outs, out_values) for i in a + v + c]
    ids = (self._prefix + before_desc + desc + mid_ids + in_ids + between_ids
           + out_ids + after_ids + self._suffix)
    assert len(ids) <= self.max_len, (len(ids), self.max_len)
    return np.asarray(ids, np.int32)

  def _shorten(self, values: list[list[int]], room: int, kind: str) -> list[list[int]]:
    """Field values cut from the middle (longest first) to fit `room` tokens.

    Counts `truncated_<kind>s` (values cut) and `<kind>_tokens_removed`.
    """
    if sum(map(len, values)) <= room:
      return values
    keeps = _water_fill([len(v) for v in values], room)
    out = []
    for v, keep in zip(values, keeps):
      if keep < len(v):
        self.stats[f"truncated_{kind}s"] += 1
        self.stats[f"{kind}_tokens_removed"] += len(v) - keep
        v = _cut_middle(v, keep, self._ellipsis)
      out.append(v)
    return out

  def render_text(self, component: int, inputs: Fields, outputs: Fields) -> str:
    """The untruncated text (for logs and the reference trainer)."""
    pre, post = self._tpl
    fpre, fpost = self._field_tpl
    fmt = lambda fs: "".join(fpre.format(field=f) + str(v) + fpost.format(field=f)
                             for f, v in fs)
    mid, _, tail = post.partition("{inputs}")
    between, _, after = tail.partition("{outputs}")
    return (pre + self.descriptions[component] + mid + fmt(inputs) + between
            + fmt(outputs) + after)
