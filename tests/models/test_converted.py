"""A GGUF checkpoint converted once per machine (models/converted.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models import converted, gguf_io, packages

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Café prices in 2026? <|im_end|> ünïcode"}]


def _refuse_the_file(monkeypatch):
  def refuse(path):
    raise AssertionError(f"{path} was read: the kept conversion should serve it")
  monkeypatch.setattr(gguf_io, "open_gguf", refuse)


def _same_model(a, b):
  (ca, pa, ta), (cb, pb, tb) = a, b
  assert ca == cb
  assert jax.tree.structure(pa) == jax.tree.structure(pb)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  text = ta.apply_chat_template(CHAT, add_generation_prompt=True)
  assert text == tb.apply_chat_template(CHAT, add_generation_prompt=True)
  assert ta.encode(text) == tb.encode(text)
  assert tb.decode(tb.encode(text), skip_special_tokens=False) == text
  for field in ("pad_id", "eos_ids", "bos_id", "add_bos", "chat_template", "max_id"):
    assert getattr(ta, field) == getattr(tb, field), field


def test_a_converted_gguf_loads_without_reading_the_file(tmp_path, monkeypatch):
  path = packages.smollm2_gguf()
  monkeypatch.setenv("OPTIMAS_JAX_MODEL_CACHE", str(tmp_path))
  first = gguf_io.load_gguf(path, jnp.float32)          # converts and keeps it
  (kept,) = tmp_path.iterdir()
  assert sorted(p.name for p in kept.iterdir()) == ["meta.json", "params.safetensors",
                                                    "tokenizer.json"]
  with monkeypatch.context() as m:
    _refuse_the_file(m)
    again = gguf_io.load_gguf(path, jnp.float32)
    m.setattr(gguf_io, "_TOKENIZERS", {})
    tokenizer = gguf_io.load_gguf_tokenizer(path)
  _same_model(first, again)
  _same_model(first, (first[0], first[1], tokenizer))
  # A damaged conversion is converted again (the file is read) and replaced.
  (kept / "params.safetensors").write_bytes(b"\0" * 64)
  _same_model(first, gguf_io.load_gguf(path, jnp.float32))
  with monkeypatch.context() as m:
    _refuse_the_file(m)
    _same_model(first, gguf_io.load_gguf(path, jnp.float32))


def test_the_key_follows_the_file_and_an_empty_setting_keeps_nothing(tmp_path, monkeypatch):
  path = tmp_path / "model.gguf"
  path.write_bytes(b"v1")
  monkeypatch.setenv("OPTIMAS_JAX_MODEL_CACHE", str(tmp_path / "kept"))
  first = converted._target(path, jnp.float32)  # pylint: disable=protected-access
  assert first == converted._target(path, jnp.float32)  # pylint: disable=protected-access
  assert first != converted._target(path, jnp.bfloat16)  # pylint: disable=protected-access
  path.write_bytes(b"v2, longer")                       # another file: another folder
  assert first != converted._target(path, jnp.float32)  # pylint: disable=protected-access
  monkeypatch.setenv("OPTIMAS_JAX_MODEL_CACHE", "")
  calls = []
  assert converted.load_or_convert(path, jnp.float32,
                                   lambda: calls.append(1) or ("c", "p", "t")) == ("c", "p", "t")
  assert calls == [1] and not (tmp_path / "kept").exists()


def test_a_missing_gguf_file_names_the_path(tmp_path):
  with pytest.raises(Exception, match=r"missing\.gguf: GGUF file not found"):
    gguf_io.load_gguf(tmp_path / "missing.gguf", jnp.float32)
