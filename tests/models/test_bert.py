"""BERT encoder: shapes, layer-range API, and parity with sentence-transformers.

tests/data/minilm_reference.npz holds all-MiniLM-L6-v2 embeddings computed
once with PyTorch sentence-transformers (``SentenceTransformer(model_dir)
.encode(..., normalize_embeddings=True)``) by
experiments/benchmarks/record_references.py; torch is not needed here.
"""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models import bert, registry

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"


def test_tiny_bert_shapes_and_layer_paths():
  cfg = bert.BertConfig.tiny()
  module = bert.BertEncoder(cfg)
  ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
  mask = jnp.array([[1] * 6, [1] * 3 + [0] * 3])
  params = module.init(jax.random.PRNGKey(0), ids, mask)
  assert set(params["params"]) == {"embeddings", "layer_0", "layer_1"}
  out = module.apply(params, ids, mask)
  chex.assert_shape(out, (2, 6, cfg.hidden_size))
  # embed + run_layers in two pieces == __call__ (lower layers can be cached).
  h = module.apply(params, ids, method=module.embed)
  h = module.apply(params, h, mask, 0, 1, method=module.run_layers)
  h = module.apply(params, h, mask, 1, 2, method=module.run_layers)
  chex.assert_trees_all_close(h, out, atol=1e-6)
  # Padding does not change the real tokens' states.
  short = module.apply(params, ids[1:, :3], mask[1:, :3])
  chex.assert_trees_all_close(short, out[1:, :3], atol=1e-5)


def test_mean_pool_ignores_padding():
  hidden = jnp.array([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
  pooled = bert.mean_pool(hidden, jnp.array([[1, 1, 0]]))
  chex.assert_trees_all_close(pooled, jnp.array([[2.0, 2.0]]))


def test_tiny_bert_backbone():
  b = registry.load_backbone("tiny-bert")
  assert b.kind == "encoder" and b.num_layers == 2 and b.hidden_size == 32
  ids = b.tokenizer.encode_batch(["hello world", "a longer sentence here"])
  assert max(max(r) for r in ids) < b.module.config.vocab_size
  emb = bert.encode_sentences(b.module, b.params, b.tokenizer, ["hello", "world"])
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers():
  ref = np.load(DATA / "minilm_reference.npz")
  b = registry.load_backbone("minilm")
  sentences = [str(s) for s in ref["sentences"]]
  emb = bert.encode_sentences(b.module, b.params, b.tokenizer, sentences, batch_size=4)
  cos = np.sum(emb * ref["embeddings"], axis=1)
  assert cos.min() >= 0.999, cos
  # The long sentence is cut at max_seq_length like sentence-transformers does.
  assert len(b.tokenizer.encode(sentences[-1])) == int(ref["max_seq_length"])
  # A shorter cut keeps [SEP] last, like the tokenizer's own truncation.
  ids, _ = b.tokenizer.pad_batch(sentences[-1:], max_length=16)
  assert ids.shape == (1, 16) and ids[0, -1] == b.tokenizer.tokenizer.token_to_id("[SEP]")


@pytest.mark.slow
def test_minilm_bf16_close():
  ref = np.load(DATA / "minilm_reference.npz")
  b = registry.load_backbone("minilm", jnp.bfloat16)
  sentences = [str(s) for s in ref["sentences"][:4]]
  emb = bert.encode_sentences(b.module, b.params, b.tokenizer, sentences)
  assert np.sum(emb * ref["embeddings"][:4], axis=1).min() >= 0.99
