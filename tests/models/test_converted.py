"""A GGUF checkpoint converted once per machine (models/converted.py)."""

import os

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


def test_only_the_most_recently_used_conversions_are_kept(tmp_path, monkeypatch):
  from optimas_jax.models.registry import load_backbone
  tiny = load_backbone("tiny-llama")
  model = (tiny.module.config, tiny.params, tiny.tokenizer)
  monkeypatch.setenv("OPTIMAS_JAX_MODEL_CACHE", str(tmp_path / "kept"))
  monkeypatch.setattr(converted, "KEEP_PER_MODEL", 2)
  # The same file name in three checkouts: three keys, one name and dtype.
  paths = {}
  for i, version in enumerate(("v1", "v2", "v3")):
    (tmp_path / version).mkdir()
    paths[version] = tmp_path / version / "model.gguf"
    paths[version].write_bytes(version.encode())
  target = lambda v, dtype=jnp.float32: converted._target(paths[v], dtype)  # pylint: disable=protected-access
  for i, version in enumerate(("v1", "v2")):
    converted.load_or_convert(paths[version], jnp.float32, lambda: model)
    os.utime(target(version), (1000.0 * (i + 1),) * 2)        # v1 used before v2
  converted.load_or_convert(paths["v1"], jnp.bfloat16, lambda: model)
  # Reading v1's conversion marks it used: v2 becomes the least recently used.
  converted.load_or_convert(paths["v1"], jnp.float32, lambda: pytest.fail("v1 is kept"))
  converted.load_or_convert(paths["v3"], jnp.float32, lambda: model)
  kept = set((tmp_path / "kept").iterdir())
  assert kept == {target("v1"), target("v3"), target("v1", jnp.bfloat16)}
