"""Tokenizers: a thin wrapper over ``tokenizers.Tokenizer`` plus chat templates.

One wrapper type for every backbone, so the reward code and the generator
can pad, decode and render chat messages without caring where the
vocabulary came from (a HF ``tokenizer.json`` or GGUF metadata).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors


@dataclasses.dataclass(frozen=True, eq=False)
class TextTokenizer:
  """Text <-> ids, with the ids a model needs (pad, bos, stop tokens)."""

  tokenizer: tokenizers.Tokenizer
  pad_id: int
  eos_ids: tuple[int, ...] = ()
  bos_id: int | None = None
  add_bos: bool = False             # prepend bos_id when encoding plain text
  chat_template: str | None = None
  max_id: int | None = None         # ids above are clipped (tiny models reuse big vocabularies)

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def _fix(self, ids: list[int]) -> list[int]:
    if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
      ids = [self.bos_id] + ids
    if self.max_id is not None:
      ids = [min(i, self.max_id) for i in ids]
    return ids

  def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
    return self._fix(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

  def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
    encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
    return [self._fix(e.ids) for e in encs]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def pad_batch(self, texts: Sequence[str], max_length: int | None = None,
                multiple_of: int = 1, side: str = "right"):
    """Encodes and pads ``texts`` to one length; returns (ids, mask) int32 arrays.

    Longer texts are cut to ``max_length`` keeping the start (encoder
    convention; the generator truncates prompts itself, keeping the end).
    """
    rows = self.encode_batch(texts)
    if max_length is not None:
      special = self.tokenizer.get_added_tokens_decoder()
      # Keep a trailing special token ([SEP]) as the tokenizer's own truncation does.
      rows = [r if len(r) <= max_length else
              (r[:max_length - 1] + r[-1:] if r[-1] in special and special[r[-1]].special
               else r[:max_length]) for r in rows]
    return pad_ids(rows, self.pad_id, multiple_of=multiple_of, side=side)

  def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    if self.chat_template is None:
      raise ValueError("this tokenizer has no chat template; pass plain strings instead of messages")
    return render_chat(self.chat_template, messages, add_generation_prompt)


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, length: int | None = None,
            multiple_of: int = 1, side: str = "right"):
  """Pads id lists to ``length`` (default: longest, rounded up to ``multiple_of``)."""
  if side not in ("left", "right"):
    raise ValueError(f"side={side!r}; expected 'left' or 'right'")
  longest = max((len(r) for r in rows), default=1)
  if length is None:
    length = -(-max(longest, 1) // multiple_of) * multiple_of
  if longest > length:
    raise ValueError(f"a row has {longest} ids > length {length}")
  ids = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    if not r:
      continue
    sl = slice(length - len(r), length) if side == "left" else slice(0, len(r))
    ids[i, sl] = r
    mask[i, sl] = 1
  return ids, mask


# ----------------------------------------------------------------------------
# Loading


def from_tokenizer_json(path: pathlib.Path, max_length: int | None = None) -> TextTokenizer:
  """A HF ``tokenizer.json`` (BERT or Llama family); padding/truncation reset.

  The file's own fixed padding is switched off (batches are padded here) and
  truncation is set to ``max_length`` so special tokens survive the cut.
  """
  tok = tokenizers.Tokenizer.from_file(str(path))
  tok.no_padding()
  tok.no_truncation()
  if max_length is not None:
    tok.enable_truncation(max_length)
  cfg_path = pathlib.Path(path).with_name("tokenizer_config.json")
  cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}

  def token_id(field):
    value = cfg.get(field)
    if isinstance(value, dict):
      value = value.get("content")
    return tok.token_to_id(value) if isinstance(value, str) else None

  pad = token_id("pad_token")
  eos = token_id("eos_token")
  bos = token_id("bos_token")
  eos_ids = tuple(i for i in (eos, tok.token_to_id("<|im_end|>"), tok.token_to_id("<|eot_id|>"))
                  if i is not None)
  eos_ids = tuple(dict.fromkeys(eos_ids))
  if pad is None:
    pad = eos if eos is not None else 0
  template = cfg.get("chat_template")
  tmpl_path = pathlib.Path(path).with_name("chat_template.jinja")
  if template is None and tmpl_path.exists():
    template = tmpl_path.read_text()
  return TextTokenizer(tok, pad_id=pad, eos_ids=eos_ids, bos_id=bos,
                       add_bos=bool(cfg.get("add_bos_token", False)), chat_template=template)


# llama.cpp's "smollm" pre-tokenizer: single digits, then the GPT-2 split
# (the same as SmolLM2's own tokenizer.json).
_PRE_TOKENIZERS = {
    "smollm": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "default": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
}


def from_gguf_metadata(meta: dict) -> TextTokenizer:
  """Builds a byte-level BPE tokenizer from GGUF ``tokenizer.ggml.*`` fields."""
  model = meta.get("tokenizer.ggml.model")
  if model != "gpt2":
    raise ValueError(f"GGUF tokenizer.ggml.model={model!r}; only 'gpt2' (byte-level BPE) "
                     "is implemented")
  pre = meta.get("tokenizer.ggml.pre", "default")
  if pre not in _PRE_TOKENIZERS:
    raise ValueError(f"GGUF tokenizer.ggml.pre={pre!r}; known: {sorted(_PRE_TOKENIZERS)}")
  tokens = meta["tokenizer.ggml.tokens"]
  vocab = {t: i for i, t in enumerate(tokens)}
  merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                                        byte_fallback=False))
  tok.pre_tokenizer = _PRE_TOKENIZERS[pre]()
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  types = meta.get("tokenizer.ggml.token_type", [])
  # token_type 3 = control, 4 = user-defined: matched whole, never split by BPE.
  special = [tokens[i] for i, t in enumerate(types) if t == 3]
  user = [tokens[i] for i, t in enumerate(types) if t == 4]
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                          for t in special])
  if user:
    tok.add_tokens([tokenizers.AddedToken(t, normalized=False) for t in user])
  eos = meta.get("tokenizer.ggml.eos_token_id")
  eos_ids = tuple(dict.fromkeys(i for i in (eos, vocab.get("<|im_end|>"), vocab.get("<|eot_id|>"))
                                if i is not None))
  pad = meta.get("tokenizer.ggml.padding_token_id", eos if eos is not None else 0)
  return TextTokenizer(tok, pad_id=int(pad), eos_ids=eos_ids,
                       bos_id=meta.get("tokenizer.ggml.bos_token_id"),
                       add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                       chat_template=meta.get("tokenizer.chat_template"))


# ----------------------------------------------------------------------------
# Chat templates

_CHATML_DEFAULT_SYSTEM = re.compile(
    r"\{\{ *'<\|im_start\|>system\n(.*?)<\|im_end\|>\n' *\}\}", re.S)


def _render_chatml(template: str, messages, add_generation_prompt: bool) -> str:
  """ChatML (``<|im_start|>role\\ncontent<|im_end|>\\n``) without jinja2."""
  out = []
  default_system = _CHATML_DEFAULT_SYSTEM.search(template)
  if default_system and messages and messages[0]["role"] != "system":
    out.append(f"<|im_start|>system\n{default_system.group(1)}<|im_end|>\n")
  for m in messages:
    out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
  if add_generation_prompt:
    out.append("<|im_start|>assistant\n")
  return "".join(out)


# Templates known to be plain ChatML (SmolLM2's): rendered natively, so the
# core install needs no jinja2. Anything else goes through jinja2.
def _is_simple_chatml(template: str) -> bool:
  return ("<|im_start|>" in template and "tools" not in template
          and "reasoning" not in template and "namespace" not in template)


def render_chat(template: str, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
  """Renders chat ``messages`` ([{"role", "content"}]) with a model's template."""
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or "role" not in m or "content" not in m:
      raise ValueError(f"messages[{i}]={m!r}; expected a dict with 'role' and 'content'")
  if _is_simple_chatml(template):
    return _render_chatml(template, messages, add_generation_prompt)
  try:
    from jinja2.sandbox import ImmutableSandboxedEnvironment
  except ImportError as e:
    raise ImportError("this chat template needs jinja2: pip install jinja2") from e
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  return env.from_string(template).render(messages=list(messages),
                                          add_generation_prompt=add_generation_prompt,
                                          bos_token="", eos_token="")
