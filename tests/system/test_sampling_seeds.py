"""Per-example sampling on the real SmolLM2: a sample never depends on its batch-mates.

Every call here decodes 12 tokens from prompts under 64 tokens, in batches
of 8 or 1, so the whole file compiles two programs.
"""

import pytest

from optimas_jax import system as osys
from optimas_jax.llm import local
from optimas_jax.system import BatchRng, derive_seed
from optimas_jax.tasks import llm_calls

pytestmark = pytest.mark.slow

WRITER = "You are a creative writer. Answer in one short sentence."
TOPICS = ["the sea", "a fruit", "clouds", "a city at night", "a cat's name", "trains",
          "breakfast", "the colour blue"]
NEW_TOKENS = 12
TEMPERATURE = 0.8


@pytest.fixture(scope="module")
def llm():
  return local.load_local_llm("smollm2-135m-instruct")


def test_an_example_samples_the_same_text_alone_or_in_a_batch(llm):
  users = [f"Say something about {t}." for t in TOPICS]
  seeds = tuple(derive_seed(0, "example", i) for i in range(len(users)))
  batch = llm_calls.chat(llm, WRITER, users, NEW_TOKENS, TEMPERATURE, BatchRng(seeds))
  for i in (0, 5):
    alone = llm_calls.chat(llm, WRITER, [users[i]], NEW_TOKENS, TEMPERATURE,
                           BatchRng(seeds[i:i + 1]))
    assert alone == [batch[i]]
  # It is sampling: one message under eight seeds gives several texts.
  same = llm_calls.chat(llm, WRITER, [users[0]] * len(seeds), NEW_TOKENS, TEMPERATURE,
                        BatchRng(seeds))
  assert same[0] == batch[0] and len(set(same)) > 1, same
  with pytest.raises(ValueError, match="2 seeds for 1 user messages"):
    llm_calls.chat(llm, WRITER, users[:1], NEW_TOKENS, TEMPERATURE, BatchRng(seeds[:2]))


def _writer_system(llm):
  def ask(inputs, variable, rng):
    return [{"request": f"Say something about {x['topic']}."} for x in inputs]

  def write(inputs, prompt, rng):
    texts = llm_calls.chat(llm, prompt, [x["request"] for x in inputs], NEW_TOKENS,
                           TEMPERATURE, rng)
    return [{"text": t} for t in texts]

  return osys.System(
      components=[
          osys.Component("asker", "Turns a topic into a request.", ["topic"], ["request"], ask,
                         deterministic=True),
          osys.Component("writer", "Writes about the request.", ["request"], ["text"], write,
                         osys.Prompt(WRITER)),
      ],
      input_fields=["topic"],
      metric=osys.Metric(lambda ex, pred: float(len(pred["text"]) > 0), ["text"]))


def test_run_from_reproduces_run_for_a_sampling_component(llm):
  system = _writer_system(llm)
  examples = [{"topic": t} for t in TOPICS]
  config = system.default_config()
  result = system.run(examples, config, seed=3)
  assert result.num_failed == 0
  texts = [p["text"] for p in result.predictions]
  assert len(set(texts)) > 1
  again = system.run_from("writer", result.traces, config)
  assert [p["text"] for p in again.predictions] == texts
  # One trace on its own (no batch-mates) replays its own sample too.
  (alone,) = system.run_from("writer", result.traces[6:7], config).predictions
  assert alone["text"] == texts[6]
  # A Monte-Carlo sample draws new text, the same alone or batched.
  resampled = system.run_from("writer", result.traces, config, sample=1)
  (one,) = system.run_from("writer", result.traces[6:7], config, sample=1).predictions
  assert one["text"] == resampled.predictions[6]["text"]
  assert [p["text"] for p in resampled.predictions] != texts
