"""The server under real clients' load: the `openai` client and DSPy (LiteLLM), concurrent,
with their own retry logic, on loopback; every answer correct and the requests batched."""

import concurrent.futures

import pytest

from tests.peers.conftest import require_peers

require_peers()

import dspy  # noqa: E402
import openai  # noqa: E402

from optimas_jax.llm import SamplingParams, serve  # noqa: E402
from optimas_jax.peers import env  # noqa: E402
from optimas_jax.peers.dspy_adapter import OptimasAdapter  # noqa: E402
from optimas_jax.peers.served import ServedModel  # noqa: E402

CONCURRENCY = 12


def _chat(client, text):
  return client.chat.completions.create(
      model="tiny-llama", messages=[{"role": "user", "content": text}], max_tokens=6,
      temperature=0)


def test_concurrent_openai_clients_get_their_own_correct_answers(server, tiny_llm):
  client = openai.OpenAI(base_url=server.url, api_key="local", max_retries=2, timeout=120)
  texts = [f"request {i}: name a river" for i in range(CONCURRENCY)]
  before = server.stats()
  with env.LoopbackOnly() as guard, concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
    replies = list(pool.map(lambda t: _chat(client, t), texts))
  assert not guard.outside
  after = server.stats()
  # The same greedy answers as the model gives them directly, each to its own request.
  expected = tiny_llm.generate([[{"role": "user", "content": t}] for t in texts],
                               SamplingParams(max_new_tokens=6))
  assert [r.choices[0].message.content for r in replies] == [g.text for g in expected]
  assert len({r.id for r in replies}) == CONCURRENCY
  for r, g in zip(replies, expected):
    assert r.id.startswith("chatcmpl-") and r.model == "tiny-llama"
    assert r.choices[0].finish_reason == g.finish_reason == "length"
    assert r.usage.completion_tokens == 6 and r.usage.prompt_tokens == g.prompt_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + 6
  batches = after["batches"] - before["batches"]
  assert after["generated"] - before["generated"] == CONCURRENCY
  assert batches < CONCURRENCY and after["largest_batch"] > 1, after   # batched


def test_the_clients_retry_logic_gets_through_injected_5xx(tiny_llm):
  server = serve.Server(tiny_llm, "tiny-llama", "127.0.0.1", 0, batch_window_ms=30,
                        fail_status=503, fail_count=2).start()
  try:
    client = openai.OpenAI(base_url=server.url, api_key="local", max_retries=4, timeout=120)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      replies = list(pool.map(lambda i: _chat(client, f"request {i}: name a river"), range(3)))
    assert all(r.choices[0].message.content for r in replies)
    stats = server.stats()
    assert stats["injected_failures"] == 2 and stats["http_5xx"] == 2
    assert stats["generated"] == 3
  finally:
    server.close()


def test_dspy_parallel_predictions_through_litellm_all_parse(server, tmp_path):
  lm = ServedModel(server.url, "tiny-llama").dspy_lm(tmp_path, temperature=0.0, max_tokens=6,
                                                     cache=False)
  adapter = OptimasAdapter()
  predict = dspy.Predict(dspy.Signature("question -> answer", "Answer in one word."))
  examples = [dspy.Example(question=f"What is {i} plus one?").with_inputs("question")
              for i in range(8)]
  before = server.stats()
  with env.LoopbackOnly() as guard, dspy.context(lm=lm, adapter=adapter):
    outputs = predict.batch(examples, num_threads=8, return_failed_examples=False)
  assert not guard.outside
  assert len(outputs) == 8 and all(o.answer for o in outputs)
  assert adapter.parse_stats() == {"calls": 8, "parse_failures": 0}
  after = server.stats()
  assert after["generated"] - before["generated"] == 8
  assert after["batches"] - before["batches"] < 8, after
