"""Continuous batching: requests join a running batch and leave it when done."""

import threading
import time

import jax
import numpy as np
import pytest

from optimas_jax.models import continuous, generate


@pytest.fixture(scope="module")
def generator(tiny):
  return generate.Generator(*tiny, pad_id=0, prompt_multiple=16)


@pytest.fixture
def decoder(tiny):
  dec = continuous.ContinuousDecoder(*tiny, pad_id=0, slots=4, context=64, prompt_multiple=16,
                                     steps_per_call=3)
  yield dec
  dec.close()


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.8, 0.9)])
def test_each_request_gets_the_generators_tokens(tiny, generator, decoder, temperature, top_p):
  # 20 requests through 4 slots of a 64-column ring: slots are reused, the ring wraps,
  # and requests of different lengths share decode calls.
  rng = np.random.default_rng(0)
  prompts = [rng.integers(1, 200, size=rng.integers(2, 30)).tolist() for _ in range(20)]
  limits = [int(rng.choice([2, 11, 29])) for _ in prompts]   # few reference programs
  keys = [jax.random.key(i) for i in range(len(prompts))]
  futures = [decoder.submit(p, max_new_tokens=n, stop_ids=[7], temperature=temperature,
                            top_p=top_p, key=k) for p, n, k in zip(prompts, limits, keys)]
  for p, n, k, f in zip(prompts, limits, keys, futures):
    got = f.result(timeout=300)
    ref = generator.generate_ids([p], max_new_tokens=n, stop_ids=[7], temperature=temperature,
                                 top_p=top_p, rng=k[None])[0]
    assert got.tokens == ref.tokens
    np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=1e-5)
    assert (got.stopped, got.prompt_tokens, got.truncated) == (
        ref.stopped, ref.prompt_tokens, ref.truncated)
  assert decoder.stats["max_active"] == 4 and decoder.stats["completed"] == 20


def test_rows_with_different_sampling_params_share_a_call(tiny, generator, decoder):
  settings = [(0.0, 1.0), (1.2, 1.0), (0.7, 0.5), (1.0, 0.95)]
  prompt = [3, 4, 5, 6, 7, 8]
  futures = [decoder.submit(prompt, max_new_tokens=12, temperature=t, top_p=p,
                            key=jax.random.key(9)) for t, p in settings]
  for (t, p), f in zip(settings, futures):
    ref = generator.generate_ids([prompt], max_new_tokens=12, temperature=t, top_p=p,
                                 rng=jax.random.key(9)[None])[0]
    assert f.result(timeout=300).tokens == ref.tokens
  assert decoder.stats["max_active"] == 4


def test_a_short_request_leaves_while_a_long_one_runs(tiny, generator):
  module, params = tiny
  dec = continuous.ContinuousDecoder(module, params, 0, slots=2, context=128,
                                     prompt_multiple=16, steps_per_call=1)
  try:
    long = dec.submit([1, 2, 3], max_new_tokens=100)
    while dec.stats["calls"] < 5:          # the long request is decoding
      time.sleep(0.01)
    short = dec.submit([4, 5, 6], max_new_tokens=5)
    short.result(timeout=300)
    assert not long.done()                 # the short one did not wait for the batch's longest
    # The long row outgrew the 64-column span: its calls moved to 128 columns.
    assert long.result(timeout=300).tokens == generator.generate_ids(
        [[1, 2, 3]], max_new_tokens=100)[0].tokens
  finally:
    dec.close()


def test_long_prompts_keep_their_end(tiny, generator, decoder):
  prompt = list(range(1, 80))      # room in a 64-column slot: 64 - 10 new - 3 steps per call
  got = decoder.submit(prompt, max_new_tokens=10).result(timeout=300)
  assert got.truncated == 79 - 51 and got.prompt_tokens == 51
  ref = generate.Generator(*tiny, pad_id=0, prompt_multiple=16, max_context=61)
  assert got.tokens == ref.generate_ids([prompt], max_new_tokens=10)[0].tokens


def test_bad_requests_are_refused_before_they_queue(decoder):
  with pytest.raises(ValueError, match="max_new_tokens=61"):
    decoder.submit([1, 2], max_new_tokens=61)
  with pytest.raises(ValueError, match="explicit PRNG key"):
    decoder.submit([1, 2], max_new_tokens=4, temperature=0.5)
  with pytest.raises(ValueError, match="top_p"):
    decoder.submit([1, 2], max_new_tokens=4, top_p=0.0)
  with pytest.raises(ValueError, match="power of two"):
    continuous.ContinuousDecoder(decoder.module, decoder.params, 0, slots=3, context=64)


def test_a_failing_call_fails_its_requests_and_the_decoder_goes_on(tiny, decoder):
  real = decoder._program
  calls = []

  def broken(width, span):
    calls.append(1)
    if len(calls) == 1:
      def lost(*args):
        raise RuntimeError("device lost")
      return lost, width, span
    return real(width, span)

  decoder._program = broken
  first = decoder.submit([1, 2, 3], max_new_tokens=8)
  with pytest.raises(RuntimeError, match="device lost"):
    first.result(timeout=300)
  again = decoder.submit([1, 2, 3], max_new_tokens=8).result(timeout=300)
  assert len(again.tokens) == 8


def test_close_fails_waiting_requests(tiny):
  dec = continuous.ContinuousDecoder(*tiny, pad_id=0, slots=1, context=64, prompt_multiple=16)
  gate = threading.Event()
  real = dec._prefill

  def slow(*args):
    gate.wait(timeout=60)
    return real(*args)

  dec._prefill = slow
  futures = [dec.submit([1, 2], max_new_tokens=30) for _ in range(3)]
  closer = threading.Thread(target=dec.close)
  closer.start()
  gate.set()
  closer.join(timeout=120)
  errors = [f.exception(timeout=120) for f in futures]
  assert all(isinstance(e, RuntimeError) and "closed" in str(e) for e in errors)
  with pytest.raises(RuntimeError, match="closed"):
    dec.submit([1], max_new_tokens=2)


def test_one_compiled_program_per_width_and_prompt_bucket(tiny):
  # Two slots: widths 1 and 2 only. Sampling parameters, the clock, the token index and
  # the slot a request lands in are traced values: more requests do not retrace.
  dec = continuous.ContinuousDecoder(*tiny, pad_id=0, slots=2, context=64, prompt_multiple=16,
                                     steps_per_call=2, max_traces=2)
  try:
    for t, p in [(0.0, 1.0), (0.9, 1.0), (0.7, 0.8)]:
      futures = [dec.submit(list(range(1, 3 + i)), max_new_tokens=5 + i, temperature=t,
                            top_p=p, key=jax.random.key(i)) for i in range(5)]
      for f in futures:
        f.result(timeout=300)
    assert dec.stats["completed"] == 15
  finally:
    dec.close()


def test_a_call_whose_program_is_compiling_runs_on_a_wider_ready_one(tiny, generator):
  dec = continuous.ContinuousDecoder(*tiny, pad_id=0, slots=4, context=128,
                                     prompt_multiple=16, steps_per_call=2)
  try:
    dec._programs[(4, 128)].result(timeout=300)       # the widest, compiled at start
    gate, real = threading.Event(), dec._compile
    dec._compile = lambda width, span: gate.wait(timeout=300) and real(width, span)
    got = dec.submit([3, 1, 4, 1, 5], max_new_tokens=20).result(timeout=300)
    # Its own (1, 64) program was held back: every call ran on the (4, 128) one.
    assert dec.stats["covered_calls"] == dec.stats["calls"] > 0
    assert got.tokens == generator.generate_ids([[3, 1, 4, 1, 5]], max_new_tokens=20)[0].tokens
    gate.set()
    dec._programs[(1, 64)].result(timeout=300)
    calls, covered = dec.stats["calls"], dec.stats["covered_calls"]
    dec.submit([3, 1, 4], max_new_tokens=9).result(timeout=300)
    # Now compiled, the request's own program runs it.
    assert dec.stats["calls"] > calls and dec.stats["covered_calls"] == covered
  finally:
    dec.close()
