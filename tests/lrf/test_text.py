import numpy as np
import pytest

from optimas_jax.lrf.data import Group, encode_groups
from optimas_jax.lrf.text import OutputTooLongError, TextEncoder


@pytest.fixture(scope="module")
def tok():
  from optimas_jax.models.registry import load_backbone
  return load_backbone("tiny-bert").tokenizer


def test_default_template_text(tok):
  enc = TextEncoder(tok, ["Pick the next item."], 128)
  text = enc.render_text(0, [("session", "a b")], [("item", "c")])
  assert text == ("You are an evaluator for a module.\nModule task: Pick the next "
                  "item.\n\nGiven the inputs:\n- session: a b\n\nEvaluate its "
                  "outputs:\n- item: c\n")


def test_short_text_is_not_truncated(tok):
  enc = TextEncoder(tok, ["d"], 64)
  ids = enc.encode(0, [("session", "red car")], [("item", "blue bike")])
  assert ids[0] == 101 and ids[-1] == 102        # [CLS] ... [SEP]
  assert enc.stats["truncated_texts"] == 0


def test_truncation_keeps_output_whole_and_is_counted(tok):
  enc = TextEncoder(tok, ["d"], 48)
  output = "the unmistakable final answer"
  out_ids = enc._ids(output)
  long_input = "alpha beta gamma delta " * 40
  a = enc.encode(0, [("q", "short question"), ("context", long_input)],
                 [("item", output)])
  b = enc.encode(0, [("q", "short question"), ("context", long_input)],
                 [("item", "another answer")])
  assert len(a) <= 48 and len(b) <= 48
  # The output tokens end the text (before [SEP]); chosen != rejected.
  assert a.tolist()[-1 - len(out_ids):-1] == out_ids   # whole, before [SEP]
  assert not np.array_equal(a, b)
  # The short input survives; the long one was cut from the middle.
  assert set(enc._ids("short question")) <= set(a.tolist())
  assert enc.stats["truncated_texts"] == 2
  assert enc.stats["truncated_inputs"] == 2
  assert enc.stats["input_tokens_removed"] > 0


def test_output_too_long_is_an_error_and_dropped_group_is_counted(tok):
  enc = TextEncoder(tok, ["d"], 32)
  with pytest.raises(OutputTooLongError, match="max_len"):
    enc.encode(0, [("q", "x")], [("a", "word " * 40)])
  g = Group(0, (("q", "x"),), ((("a", "word " * 40),), (("a", "y"),)), (1.0, 0.0))
  assert encode_groups([g], enc, 4) == []
  assert enc.stats["groups_output_too_long"] == 1


def test_texts_and_segments_are_cached(tok):
  enc = TextEncoder(tok, ["d"], 64)
  a = enc.encode(0, [("s", "red car")], [("i", "hat")])
  assert enc.encode(0, [("s", "red car")], [("i", "hat")]) is a
  assert enc.stats["texts"] == 1


def test_duplicate_candidates_merge_and_pairless_groups_drop(tok):
  enc = TextEncoder(tok, ["d"], 64)
  g = Group(0, (("s", "x"),), ((("i", "a"),), (("i", "a"),), (("i", "b"),)),
            (1.0, 0.0, 0.0))
  (eg,) = encode_groups([g], enc, 4)
  assert len(eg.ids) == 2
  np.testing.assert_allclose(sorted(eg.scores), [0.0, 0.5])
  tie = Group(0, (("s", "x"),), ((("i", "a"),), (("i", "b"),)), (0.5, 0.5))
  assert encode_groups([tie], enc, 4) == []


def test_bad_template_names_the_field(tok):
  with pytest.raises(ValueError, match="config.lrf.template"):
    TextEncoder(tok, ["d"], 64, template="no placeholders")
