import numpy as np
import pytest

from optimas_jax.lrf.data import Group, encode_groups
from optimas_jax.lrf.text import ELLIPSIS, TextEncoder


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


def test_output_is_cut_only_when_it_alone_does_not_fit(tok):
  enc = TextEncoder(tok, ["a fairly long module description here"], 48)
  output = "alpha beta " + "word " * 40 + "gamma delta"
  output_ids = enc._ids(output)
  ids = enc.encode(0, [("q", "some input words")], [("a", output)]).tolist()
  assert len(ids) == 48
  # Last resort: inputs and description went first (to nothing), then the
  # output was cut from the middle: its head and tail around an ellipsis,
  # right before [SEP].
  assert set(enc._ids("some input words")).isdisjoint(ids)
  assert enc.stats["truncated_inputs"] == 1 and enc.stats["truncated_descriptions"] == 1
  assert enc.stats["truncated_outputs"] == 1 and enc.stats["truncated_texts"] == 1
  keep = len(output_ids) - enc.stats["output_tokens_removed"]
  ellipsis = enc._ids(ELLIPSIS)
  head = (keep - len(ellipsis) + 1) // 2
  tail = keep - len(ellipsis) - head
  assert head > 0 and tail > 0
  assert ids[-1 - keep:-1] == output_ids[:head] + ellipsis + output_ids[-tail:]


def test_group_with_an_over_long_output_is_kept(tok):
  enc = TextEncoder(tok, ["d"], 32)
  g = Group(0, (("q", "x"),), ((("a", "red " + "word " * 40),), (("a", "y"),)), (1.0, 0.0))
  (eg,) = encode_groups([g], enc, 4)
  assert max(len(i) for i in eg.ids) <= 32 and eg.num_pairs() == 1
  assert enc.stats["truncated_outputs"] == 1


def test_template_longer_than_max_len_names_the_field(tok):
  enc = TextEncoder(tok, ["d"], 16)
  with pytest.raises(ValueError, match="config.lrf.max_len"):
    enc.encode(0, [("q", "x")], [("a", "y")])


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
