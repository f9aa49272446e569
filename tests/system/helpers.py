"""Small systems built for the core's tests."""

from optimas_jax import system as osys


def upper(inputs, variable, rng):
  return [{"b": x["a"].upper()} for x in inputs]


def make_diamond(counters=None):
  """a -> left, right (parallel) -> join; declared in a shuffled order."""

  def left(inputs, variable, rng):
    return [{"l": f"{variable}:{x['a']}:{rng.numpy(i).integers(1000)}"}
            for i, x in enumerate(inputs)]

  def right(inputs, variable, rng):
    return [{"r": x["a"][::-1] * variable["times"]} for x in inputs]

  def join(inputs, variable, rng):
    return [{"out": f"{x['l']}|{x['r']}|{rng.numpy(i).integers(1000)}"}
            for i, x in enumerate(inputs)]

  components = [
      osys.Component("join", "joins both branches", ("l", "r"), ("out",), join),
      osys.Component("right", "reverses", ("a",), ("r",), right,
                     osys.Hyperparameters({"times": osys.IntRange(1, 3)}, {"times": 1})),
      osys.Component("left", "prefixes", ("a",), ("l",), left, osys.Prompt("P")),
  ]
  metric = osys.Metric(lambda ex, pred: float(len(pred["out"]) > 0), ("out",))
  return osys.System(components, ["a"], metric, counters)
