"""Batched KV-cache generation: cache correctness, buckets, sampling, stops."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimas_jax.models import generate, llama


def _greedy_without_cache(module, params, prompt, n):
  """Reference: re-run the full forward pass for every new token.

  The sequence sits right-padded in a fixed 32-slot buffer (causal attention
  never looks right), so one compiled forward serves every step.
  """
  ids, logps = list(prompt), []
  forward = jax.jit(module.apply)
  for _ in range(n):
    x = np.zeros((1, 32), np.int32)
    x[0, :len(ids)] = ids
    logits = forward(params, x, (x != 0).astype(np.int32) | (np.arange(32) < len(ids)))[0, len(ids) - 1]
    ids.append(int(jnp.argmax(logits)))
    logps.append(float(jax.nn.log_softmax(logits)[ids[-1]]))
  return ids[len(prompt):], logps


def test_cached_greedy_matches_full_forward_with_left_padding(tiny):
  module, params = tiny
  gen = generate.Generator(module, params, pad_id=0, prompt_multiple=16)
  prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
  out = gen.generate_ids(prompts, max_new_tokens=6)
  for prompt, c in zip(prompts, out):
    tokens, logps = _greedy_without_cache(module, params, prompt, 6)
    assert c.tokens == tokens and not c.stopped and c.prompt_tokens == len(prompt)
    np.testing.assert_allclose(c.logprobs, logps, atol=1e-4)


def test_same_bucket_compiles_once(tiny):
  module, params = tiny
  gen = generate.Generator(module, params, pad_id=0, prompt_multiple=16, max_traces=1)
  key = jax.random.PRNGKey(0)
  # Batch 3 and 4 share bucket 4; lengths 5 and 16 share bucket 16; sampling
  # parameters are traced values.
  gen.generate_ids([[1, 2, 3, 4, 5]] * 3, max_new_tokens=4)
  gen.generate_ids([list(range(1, 17))] * 4, max_new_tokens=4, temperature=0.7, top_p=0.9, rng=key)
  gen.generate_ids([[9, 9]] * 4, max_new_tokens=4, stop_ids=[2, 3], temperature=1.0, rng=key)
  with pytest.raises(AssertionError):  # a new prompt bucket is a new trace
    gen.generate_ids([list(range(1, 18))] * 4, max_new_tokens=4)


def test_same_key_same_tokens_and_different_keys_differ(tiny):
  module, params = tiny
  gen = generate.Generator(module, params, pad_id=0, prompt_multiple=16)
  run = lambda seed: [c.tokens for c in gen.generate_ids(
      [[1, 2, 3], [4, 5]], max_new_tokens=12, temperature=1.0, top_p=0.95,
      rng=jax.random.PRNGKey(seed))]
  assert run(3) == run(3)
  assert run(3) != run(4)
  with pytest.raises(ValueError, match="explicit rng"):
    gen.generate_ids([[1]], max_new_tokens=2, temperature=1.0)


def test_per_row_stop_tokens(tiny):
  module, params = tiny
  gen = generate.Generator(module, params, pad_id=0, prompt_multiple=16)
  prompts = [[5, 6, 7], [8, 9]]
  free = gen.generate_ids(prompts, max_new_tokens=8)
  # Row 0 stops at its 3rd token, row 1 has a stop id it never produces.
  stops = [[free[0].tokens[2]], [-5]]
  out = gen.generate_ids(prompts, max_new_tokens=8, stop_ids=stops)
  first = free[0].tokens.index(free[0].tokens[2]) + 1
  assert out[0].stopped and out[0].tokens == free[0].tokens[:first]
  assert not out[1].stopped and out[1].tokens == free[1].tokens


def test_long_prompt_keeps_the_end_and_counts_the_cut(tiny):
  module, params = tiny
  gen = generate.Generator(module, params, pad_id=0, prompt_multiple=16, max_context=32)
  prompt = list(range(1, 41))
  (c,) = gen.generate_ids([prompt], max_new_tokens=8)
  assert c.truncated == 40 - 24 and c.prompt_tokens == 24
  (ref,) = gen.generate_ids([prompt[-24:]], max_new_tokens=8)
  assert c.tokens == ref.tokens
  with pytest.raises(ValueError, match="leaves no room"):
    gen.generate_ids([prompt], max_new_tokens=32)


def test_top_p_filter_keeps_smallest_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(np.asarray(generate.top_p_filter(logits, 0.7)))
  assert kept.tolist() == [[True, True, False, False]]
  kept = np.isfinite(np.asarray(generate.top_p_filter(logits, 0.01)))
  assert kept.tolist() == [[True, False, False, False]]


def _nucleus_float64(row, top_p):
  """The smallest top set whose mass reaches top_p (ties with its last kept), in
  float64, and whether float32 rounding could move its edge."""
  order = np.argsort(-row, kind="stable")
  probs = np.exp(row[order] - row[order[0]])
  probs /= probs.sum()
  before = np.cumsum(probs) - probs
  cutoff = row[order][before < top_p].min()
  near = np.abs(before - top_p) < 1e-5
  return row >= cutoff, bool(near.any())


def test_top_p_filter_keeps_the_nucleus_a_float64_sort_keeps():
  rng = np.random.default_rng(0)
  checked = 0
  for trial in range(60):
    rows = rng.standard_normal((4, 3000)) * rng.uniform(0.3, 6)
    rows[:, ::40] = rows[:, 1:2]                              # ties
    rows[1, :5] = -np.inf                                      # already cut
    top_p = float(rng.choice([0.05, 0.5, 0.9, 0.95, 0.99]))
    kept = np.isfinite(np.asarray(generate.top_p_filter(jnp.asarray(rows, jnp.float32), top_p)))
    for row, got in zip(rows.astype(np.float32).astype(np.float64), kept):
      want, near = _nucleus_float64(row, top_p)
      if not near:
        np.testing.assert_array_equal(got, want)
        checked += 1
  assert checked > 200
  # A per-row top_p (the continuous decoder's), broadcast against the rows.
  rows = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 2))
  kept = np.isfinite(np.asarray(generate.top_p_filter(rows, jnp.array([[0.7], [0.9]]))))
  assert kept.tolist() == [[True, True, False, False], [True, True, True, False]]


def test_categorical_and_first_argmax_draw_what_jax_random_draws():
  # The faster formulations must not move any seeded sample: same tokens as
  # jax.random.categorical / jnp.argmax, including ties, -inf (top-p cut) and NaN.
  reference = jax.jit(jax.vmap(jax.random.categorical))
  fast = jax.jit(generate.categorical)
  for seed in range(12):
    logits = jax.random.normal(jax.random.key(100 + seed), (5, 3000)) * (1 + seed)
    logits = logits.at[:, ::7].set(-jnp.inf)
    keys = jax.random.split(jax.random.key(seed), 5)
    np.testing.assert_array_equal(fast(keys, logits), reference(keys, logits))
  x = jnp.array([[1.0, 3.0, 3.0, 2.0], [-jnp.inf, -jnp.inf, 0.0, 0.0],
                 [0.0, jnp.nan, 5.0, jnp.nan], [-jnp.inf] * 4, [2.0, 1.0, 0.0, -1.0]])
  np.testing.assert_array_equal(generate.first_argmax(x), jnp.argmax(x, axis=-1))
  assert generate.first_argmax(x).dtype == jnp.int32


def test_bfloat16_generation_runs(tiny):
  module, params = tiny
  cfg = module.config.replace(dtype=jnp.bfloat16)
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  gen = generate.Generator(llama.LlamaDecoder(cfg), bf16, pad_id=0, prompt_multiple=16)
  (c,) = gen.generate_ids([[1, 2, 3]], max_new_tokens=5, temperature=0.8,
                          rng=jax.random.PRNGKey(0))
  assert len(c.tokens) == 5 and np.all(np.isfinite(c.logprobs))
  chex.assert_tree_all_finite(jnp.asarray(c.logprobs))


def test_bucket_helpers():
  assert [generate.bucket_batch(n) for n in (1, 2, 3, 5, 32, 33)] == [1, 2, 4, 8, 32, 64]
  assert [generate.bucket_length(n, 64) for n in (0, 1, 64, 65)] == [64, 64, 64, 128]


def test_long_prompts_run_in_smaller_batches_with_the_same_greedy_tokens(tiny):
  module, params = tiny
  prompts = [[5 + i, 6, 7, 8, 9, 10, 11] for i in range(6)]
  whole = generate.Generator(module, params, pad_id=0, prompt_multiple=16)
  small = generate.Generator(module, params, pad_id=0, prompt_multiple=16, max_batch_tokens=40)
  calls = []
  chunk = small._chunk
  small._chunk = lambda rows, *a: calls.append(len(rows)) or chunk(rows, *a)
  a = whole.generate_ids(prompts, max_new_tokens=4)
  b = small.generate_ids(prompts, max_new_tokens=4)
  assert calls == [2, 2, 2]          # 40 tokens // (16-token bucket + 4 new) = 2 rows a batch
  assert [c.tokens for c in a] == [c.tokens for c in b]


def test_per_row_keys_make_rows_independent_of_their_batch_mates(tiny):
  module, params = tiny
  gen = generate.Generator(module, params, pad_id=0, prompt_multiple=16)
  prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], [11, 12]]
  keys = jax.vmap(jax.random.key)(jnp.arange(len(prompts), dtype=jnp.uint32))
  run = lambda rows, row_keys, temperature=1.0: [c.tokens for c in gen.generate_ids(
      [prompts[r] for r in rows], max_new_tokens=10, temperature=temperature, top_p=0.95,
      rng=row_keys)]
  batched = run(range(5), keys)
  assert len({tuple(t) for t in batched}) > 1
  # Alone, or in another order with other neighbours and batch bucket: the same text.
  assert run([2], keys[2:3]) == [batched[2]]
  others = jnp.array([4, 2, 0])
  assert run([4, 2, 0], keys[others]) == [batched[4], batched[2], batched[0]]
  # Raw uint32 keys (as jax.random.PRNGKey makes them), one per row, are the same keys.
  assert run([4, 2, 0], jax.random.key_data(keys[others])) == [batched[4], batched[2], batched[0]]
  # Greedy ignores the keys.
  assert run([4, 2, 0], keys[others], 0.0) == run([4, 2, 0], None, 0.0)
  with pytest.raises(ValueError, match="one key per prompt"):
    run([0, 1], keys[:3])


def test_a_single_key_folds_in_the_row_index_across_chunks(tiny):
  module, params = tiny
  prompts = [[5 + i, 6, 7, 8, 9, 10, 11] for i in range(6)]
  key = jax.random.key(9)
  whole = generate.Generator(module, params, pad_id=0, prompt_multiple=16)
  small = generate.Generator(module, params, pad_id=0, prompt_multiple=16, max_batch_tokens=40)
  run = lambda gen, rng: [c.tokens for c in gen.generate_ids(
      prompts, max_new_tokens=4, temperature=1.0, rng=rng)]
  reference = run(whole, key)
  per_row = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(6))
  assert run(whole, per_row) == reference
  assert run(whole, jax.random.PRNGKey(9)) == reference   # a raw key is the same key
  assert run(small, key) == reference             # three chunks of two rows: row r is still r


def test_greedy_rows_do_not_depend_on_their_batch_mates_prompt_bucket(tiny):
  """A long batch-mate moves every row to a larger prompt bucket (more left padding):
  the greedy tokens stay the same; log-probs move by float summation order only."""
  module, params = tiny
  gen = generate.Generator(module, params, pad_id=0, prompt_multiple=16)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(1, 200, size=n).tolist() for n in (3, 9, 13)]
  long = rng.integers(1, 200, size=40).tolist()              # 16-token bucket -> 48
  alone = gen.generate_ids(prompts, max_new_tokens=12)
  mixed = gen.generate_ids(prompts + [long], max_new_tokens=12)[:3]
  assert [c.tokens for c in mixed] == [c.tokens for c in alone]
  for a, m in zip(alone, mixed):
    np.testing.assert_allclose(m.logprobs, a.logprobs, atol=1e-5)


def _spied_generators(module, params, record):
  """(a Generator reusing prefills whose program calls append record(*args) to seen,
  a Generator prefilling every row, seen)."""
  shared = generate.Generator(module, params, pad_id=0, prompt_multiple=8)
  plain = generate.Generator(module, params, pad_id=0, prompt_multiple=8, prefix_reuse=False)
  seen = []
  program = shared._program

  def spy(n, impl):
    run = program(n, impl)
    return lambda *args: seen.append(record(*args)) or run(*args)
  shared._program = spy
  return shared, plain, seen


def test_a_shared_prompt_prefix_is_prefilled_once_with_the_same_tokens(tiny):
  """Rows that start with the same 21 tokens (a system prompt): the first 16 (whole
  8-token buckets) are prefilled once and copied to every row; greedy and sampled
  tokens equal a per-row prefill's."""
  module, params = tiny
  rng = np.random.default_rng(1)
  system = rng.integers(1, 200, size=21).tolist()
  prompts = [system + rng.integers(1, 200, size=n).tolist() for n in (1, 5, 11)]
  shared, plain, seen = _spied_generators(module, params,
                                          lambda p, a, prefix, *rest: np.shape(prefix))
  keys = jax.vmap(jax.random.key)(jnp.arange(3, dtype=jnp.uint32))
  for kw in (dict(), dict(temperature=1.0, rng=keys)):
    ours = shared.generate_ids(prompts, max_new_tokens=8, **kw)
    ref = plain.generate_ids(prompts, max_new_tokens=8, **kw)
    assert [c.tokens for c in ours] == [c.tokens for c in ref]
    assert [c.prompt_tokens for c in ours] == [22, 26, 32]
    for o, r in zip(ours, ref):
      np.testing.assert_allclose(o.logprobs, r.logprobs, atol=1e-5)
  assert seen == [(1, 16), (1, 16)]
  # Against the cache-free reference too (row 1: prefix, padding, then its own tokens).
  tokens, logps = _greedy_without_cache(module, params, prompts[1], 6)
  out = shared.generate_ids(prompts, max_new_tokens=6)[1]
  assert out.tokens == tokens
  np.testing.assert_allclose(out.logprobs, logps, atol=1e-4)
  # No shared bucket (rows differ at token 3), a single row: the plain prefill.
  assert shared._shared_prefix([system, system[:3] + [7] * 20]) == 0
  assert shared._shared_prefix([system]) == 0


def test_rows_that_share_a_prompt_prefill_it_once_with_the_same_tokens(tiny):
  """A GRPO rollout: 2 prompts x 4 samples, each row with its own key, the prompts
  after a common 16-token prefix. Each distinct prompt is prefilled once (2 rows,
  after the prefix's 1) and its cache copied to its rows: the same tokens and
  log-probs as a per-row prefill."""
  module, params = tiny
  rng = np.random.default_rng(2)
  system = rng.integers(1, 200, size=16).tolist()
  two = [system + rng.integers(1, 200, size=n).tolist() for n in (3, 9)]
  prompts = two * 4                                   # rows 0, 2, 4, 6 share a prompt
  shared, plain, seen = _spied_generators(
      module, params, lambda p, a, prefix, ids, mask, row_prompt, *rest: (
          np.shape(prefix), np.shape(ids), row_prompt.tolist()))
  keys = jax.vmap(jax.random.key)(jnp.arange(8, dtype=jnp.uint32))
  ours = shared.generate_ids(prompts, max_new_tokens=8, temperature=1.0, rng=keys,
                             repeated_prompts=True)
  ref = plain.generate_ids(prompts, max_new_tokens=8, temperature=1.0, rng=keys,
                           repeated_prompts=True)
  assert seen == [((1, 16), (2, 16), [0, 1] * 4)]
  assert [c.tokens for c in ours] == [c.tokens for c in ref]
  assert len({tuple(c.tokens) for c in ours}) == 8       # each row drew its own sample
  for o, r in zip(ours, ref):
    np.testing.assert_allclose(o.logprobs, r.logprobs, atol=1e-5)
  # Every row its own prompt: nothing to share.
  assert shared._distinct_prompts([[1], [2], [3]], 4, repeated=True)[1] is None


@pytest.mark.usefixtures("fresh_compiles")
def test_a_new_generator_runs_the_kept_program_without_tracing(tiny, tmp_path, monkeypatch):
  """The decode program is traced and compiled once per machine (core/exported.py): a
  generator built afresh (as in a new process) traces nothing and gives the same tokens
  and log-probs, greedy and sampled with typed per-row keys."""
  from optimas_jax.core import exported  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(exported, "_folder", lambda: tmp_path)
  module, params = tiny
  rng = np.random.default_rng(2)
  prompts = [rng.integers(1, 200, size=n).tolist() for n in (2, 7, 12)]
  keys = jax.vmap(jax.random.key)(jnp.arange(3, dtype=jnp.uint32))
  settings = (dict(), dict(temperature=1.0, rng=keys), dict(temperature=0.8, top_p=0.9,
                                                             rng=jax.random.key(5)))

  def run(gen):
    return [[(c.tokens, c.logprobs) for c in gen.generate_ids(prompts, max_new_tokens=6, **kw)]
            for kw in settings]

  first = run(generate.Generator(module, params, pad_id=0, prompt_multiple=8))
  assert len(list(tmp_path.glob("generate-*.xla"))) == 1     # one program for all three
  traces = []
  real = generate._generate
  monkeypatch.setattr(generate, "_generate", lambda *a: traces.append(1) or real(*a))
  again = run(generate.Generator(module, params, pad_id=0, prompt_multiple=8))
  assert traces == [] and again == first
