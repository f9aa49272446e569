"""A small system for the runner tests: a sampled per-example step that fails on one
input, and a step that scores with a JAX model built once per system (a "model load",
logged to a file so a test can count loads per Ray actor)."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from optimas_jax import system as osys

# Drafts this process made itself (a split run makes only its block's).
OWN_DRAFTS = []

EXAMPLES = [{"q": q} for q in ("alpha", "beta", "bad", "gamma", "delta", "epsilon", "zeta")]


def _draft(example, variable, np_rng):
  OWN_DRAFTS.append(example["q"])
  if example["q"] == "bad":
    raise ValueError("no draft for 'bad'")   # a component's own failure: recorded, counted
  return {"draft": f"{variable}:{example['q']}:{np_rng.integers(1000)}"}


def build(load_log: str = ""):
  """The system; `load_log`: a file that gets one line (the pid) per model load."""
  if load_log:
    with open(load_log, "a") as f:
      f.write(f"{os.getpid()}\n")
  weights = jax.random.normal(jax.random.PRNGKey(0), (8,))
  score_fn = jax.jit(lambda x: jnp.tanh(x @ weights))

  def score(inputs, variable, rng):
    feats = np.stack([np.frombuffer(x["draft"].encode().ljust(8, b"_")[:8], np.uint8)
                      .astype(np.float32) / 255 for x in inputs])
    noise = [rng.numpy(i).normal() for i in range(len(inputs))]
    values = np.asarray(score_fn(jnp.asarray(feats)))
    return [{"score": float(v) + 0.01 * n} for v, n in zip(values, noise)]

  components = [
      osys.Component("draft", "drafts", ("q",), ("draft",),
                     osys.per_example(_draft, max_workers=2), osys.Prompt("P")),
      osys.Component("score", "scores with a JAX model", ("draft",), ("score",), score),
  ]
  metric = osys.Metric(lambda ex, pred: pred["score"], ("score",))
  return osys.System(components, ["q"], metric)


def records(system) -> dict:
  """A run and a batch of Monte-Carlo rollouts through the system, as plain values."""
  config = system.default_config()
  result = system.run(EXAMPLES, config, seed=3)
  rollouts = system.run_after("draft", result.traces * 2, config,
                              sample=[0] * len(EXAMPLES) + [1] * len(EXAMPLES))
  def plain(r):
    return {"predictions": r.predictions, "failures": r.failures(),
            "steps": [{n: (s.inputs, s.outputs, s.variable) for n, s in t.steps.items()}
                      for t in r.traces]}
  counters = system.counters.snapshot()
  return {"run": plain(result), "rollouts": plain(rollouts),
          "scores": system.evaluate(EXAMPLES, result).tolist(), "counters": counters}
