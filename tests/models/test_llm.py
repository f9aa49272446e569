"""LLM interface over the local decoder: requests, stops, usage, threads, Paris."""

import concurrent.futures
import json

import jax
import jax.numpy as jnp
import pytest

from optimas_jax.llm import Generation, SamplingParams
from optimas_jax.llm import chat, local


@pytest.fixture(scope="module")
def tiny_llm():
  return local.load_local_llm("tiny-llama")


def test_sampling_params_validate():
  with pytest.raises(ValueError, match="top_p"):
    SamplingParams(top_p=0.0)
  with pytest.raises(ValueError, match="stop"):
    SamplingParams(stop="\n")
  assert SamplingParams(stop=["x"]).stop == ("x",)


def test_generate_strings_and_chat_messages(tiny_llm):
  params = SamplingParams(max_new_tokens=6, return_logprobs=True)
  out = tiny_llm.generate(["Hello", [{"role": "user", "content": "Hi"}]], params)
  assert len(out) == 2 and all(isinstance(g, Generation) for g in out)
  for g in out:
    assert g.num_tokens == 6 and g.finish_reason == "length"
    assert len(g.logprobs) == len(g.token_ids) == 6
  assert out[1].prompt_tokens > out[0].prompt_tokens   # the chat template was applied
  assert tiny_llm.generate(["Hello"], SamplingParams(max_new_tokens=6))[0].logprobs is None


def test_stop_string_cuts_text(tiny_llm):
  (free,) = tiny_llm.generate(["Hello"], SamplingParams(max_new_tokens=8))
  stop = free.text[len(free.text) // 2:][:2]
  if not stop.strip():
    pytest.skip("random tiny model produced whitespace only")
  (g,) = tiny_llm.generate(["Hello"], SamplingParams(max_new_tokens=8, stop=(stop,)))
  assert stop not in g.text and g.finish_reason == "stop"
  assert free.text.startswith(g.text)


def test_threads_get_their_own_answers_and_usage_adds_up(tiny_llm):
  before = tiny_llm.usage.as_dict()
  prompts = [f"prompt number {i}" for i in range(6)]
  params = SamplingParams(max_new_tokens=4)
  alone = [tiny_llm.generate([p], params)[0].text for p in prompts]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    threaded = list(pool.map(lambda p: tiny_llm.generate([p], params)[0].text, prompts))
  assert threaded == alone
  after = tiny_llm.usage.as_dict()
  assert after["requests"] - before["requests"] == 12
  assert after["completion_tokens"] - before["completion_tokens"] == 48


def test_same_key_same_text(tiny_llm):
  params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)
  key = jax.random.PRNGKey(7)
  assert ([g.text for g in tiny_llm.generate(["a", "b"], params, key)]
          == [g.text for g in tiny_llm.generate(["a", "b"], params, key)])


@pytest.mark.slow
def test_smollm2_answers_paris(capsys):
  llm = local.load_local_llm("smollm2-135m-instruct")
  (g,) = llm.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                      SamplingParams(max_new_tokens=24))
  assert "Paris" in g.text and g.finish_reason == "stop"
  # The one-line CLI reuses the cached model.
  assert chat.main(["What is the capital of France?", "--max-new-tokens", "24"]) == 0
  assert "Paris" in capsys.readouterr().out


def test_usage_state_round_trips(tiny_llm):
  state = tiny_llm.state_dict()
  assert json.loads(json.dumps(state)) == state and set(state) == {"usage"}
  tiny_llm.load_state_dict({"usage": {"requests": 3}})
  assert tiny_llm.usage.as_dict() == {"requests": 3, "prompt_tokens": 0,
                                      "completion_tokens": 0, "truncated_prompts": 0}
  tiny_llm.load_state_dict(state)          # the shared model: put its counters back
  assert tiny_llm.state_dict() == state


def test_per_request_keys_through_the_llm_interface(tiny_llm):
  params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)
  keys = jax.vmap(jax.random.key)(jnp.arange(3, dtype=jnp.uint32))
  batched = [g.text for g in tiny_llm.generate(["a", "bb", "ccc"], params, keys)]
  assert [g.text for g in tiny_llm.generate(["ccc"], params, keys[2:])] == batched[2:]
