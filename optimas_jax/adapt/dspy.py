"""Optimas for an existing DSPy program: dspy.Module -> optimas_jax System -> back.

  bridge = from_dspy(program, metric, lms={"smollm2": lm})    # one component per predictor
  summary = bridge.optimize(config, workdir, train, val, test)  # the Optimas loop
  bridge.write_back(bridge.final_config, "optimized.json")    # DSPy's own save format

Each predictor (`program.named_predictors()`) becomes a component whose
instruction is a `Prompt` variable (the signature's instructions) and whose
fields are the signature's. Where several LMs are configured (`lms` with
two or more entries), each predictor also gets a model-selector component
`<predictor>_model` (a `ModelChoice`), as the paper's PubMedQA system has.
The DAG follows from field names, as in any optimas_jax System: an output
field of one predictor feeds every predictor with an input of that name.
Steps between predictors that are not LLM calls (a retriever) are passed
as `extra_components`. `check` runs the program's own forward next to the
System on a few examples and reports any difference, so a forward that
does more than pass fields along is caught.

Every predictor call goes through `OptimasAdapter` (formats and parses like
our components; parse failures are counted) unless another adapter is
given. `write_back` sets the optimized instructions (and LM choices) on the
program's predictors and saves it with `program.save(path)` (JSON), which
`program.load(path)` reads back.
"""

from __future__ import annotations

import dataclasses
import numbers
import pathlib
import re
from typing import Any, Sequence

from optimas_jax import system as osys
from optimas_jax.peers import env

dspy = env.require("dspy", what="optimas_jax.adapt.dspy")
from optimas_jax.peers.dspy_adapter import OptimasAdapter  # noqa: E402


class DspyProgramError(ValueError):
  """The DSPy program or its metric cannot be turned into an optimas_jax System."""


class MetricReturnedNone(TypeError):
  """The DSPy metric returned None (or another non-number) for an example."""


def component_name(predictor_name: str) -> str:
  return re.sub(r"\W", "_", predictor_name)


def metric_score(value, where: str = "") -> float:
  """A DSPy metric's value as a float: a number, a bool, or an object with `.score`."""
  if hasattr(value, "score") and not isinstance(value, numbers.Number):
    value = value.score
  if value is None:
    raise MetricReturnedNone(
        f"the DSPy metric returned None{where}; it must return a number or a bool "
        "(or a dspy.Prediction with a `score`), e.g. `return float(pred.answer == ex.answer)`")
  if isinstance(value, bool) or isinstance(value, numbers.Real):
    return float(value)
  raise MetricReturnedNone(f"the DSPy metric returned {type(value).__name__} {value!r:.80}"
                           f"{where}; it must return a number or a bool")


def _check_signature(name: str, predictor) -> None:
  sig = getattr(predictor, "signature", None)
  if not (isinstance(sig, type) and issubclass(sig, dspy.Signature)):
    raise DspyProgramError(
        f"predictor {name!r} has no signature (got {type(sig).__name__}); give every predictor "
        "one, e.g. dspy.Predict('question -> answer') or a dspy.Signature class")
  if not sig.output_fields:
    raise DspyProgramError(f"predictor {name!r}: its signature has no output fields")


@dataclasses.dataclass
class DspyBridge:
  """A DSPy program seen as an optimas_jax System (see the module docstring)."""

  program: Any
  system: osys.System
  predictors: dict[str, Any]          # component name -> the program's own predictor
  lms: dict[str, Any]                 # model name -> dspy.LM (the ModelChoice options)
  adapter: Any
  input_fields: tuple[str, ...]
  final_config: osys.SystemConfig | None = None

  # ------------------------------------------------------------ data

  def examples(self, data: Sequence) -> list[dict]:
    """dspy.Example or dict rows as System examples (every field kept, labels too)."""
    rows = []
    for i, ex in enumerate(data):
      row = dict(ex.toDict() if hasattr(ex, "toDict") else ex)
      missing = [f for f in self.input_fields if f not in row]
      if missing:
        raise DspyProgramError(f"example {i} lacks the program's input fields {missing}")
      rows.append(row)
    return rows

  # ------------------------------------------------------ write-back

  def apply(self, config: osys.SystemConfig):
    """Sets `config`'s instructions (and LM choices) on the program's predictors."""
    for name, predictor in self.predictors.items():
      predictor.signature = predictor.signature.with_instructions(config[name])
      if f"{name}_model" in config:
        predictor.lm = self.lms[config[f"{name}_model"]]
    return self.program

  def write_back(self, config: osys.SystemConfig, path: str | pathlib.Path | None = None):
    """`apply`, then `program.save(path)` (DSPy's JSON state) when a path is given."""
    self.apply(config)
    if path is not None:
      path = pathlib.Path(path)
      if path.suffix != ".json":
        raise ValueError(f"{path}: DSPy saves program state as .json (or .pkl); use a .json path")
      path.parent.mkdir(parents=True, exist_ok=True)
      self.program.save(str(path))
    return self.program

  # ------------------------------------------------------------ runs

  def check(self, data: Sequence, seed: int = 0) -> list[str]:
    """Differences between the program's own forward and the System on `data` (greedy LMs).

    An empty list means the field-name DAG reproduces the program.
    """
    examples = self.examples(data)
    result = self.system.run(examples, self.system.default_config(), seed=seed)
    problems = []
    for i, (ex, pred) in enumerate(zip(examples, result.predictions)):
      lm = {"lm": next(iter(self.lms.values()))} if len(self.lms) == 1 else {}
      with dspy.context(adapter=self.adapter, **lm):
        try:
          own = self.program(**{f: ex[f] for f in self.input_fields})
        except Exception as e:  # pylint: disable=broad-except
          own = e
      if pred is None or isinstance(own, Exception):
        if (pred is None) != isinstance(own, Exception):
          problems.append(f"example {i}: program {'failed' if isinstance(own, Exception) else 'ran'}"
                          f", System {'failed' if pred is None else 'ran'}")
        continue
      for f in self.system.metric.fields:
        if f in own and own[f] != pred[f]:
          problems.append(f"example {i}: {f!r} is {own[f]!r} from the program, "
                          f"{pred[f]!r} from the System")
    return problems

  def task(self, train: Sequence, val: Sequence, test: Sequence, complete=None):
    """A loop Task over this System (`complete`: the OPRO proposal LLM, optional)."""
    from optimas_jax.tasks.base import Task
    return Task(system=self.system, splits={"train": self.examples(train),
                                            "val": self.examples(val),
                                            "test": self.examples(test)},
                complete=complete)

  def optimize(self, config, workdir: str | pathlib.Path, train, val, test, complete=None,
               save_to: str | pathlib.Path | None = None) -> dict:
    """Runs the Optimas loop (`config`: an experiments/common.optimas_config()) on the program.

    The final configuration is written back into the program (and saved to
    `save_to`, DSPy's JSON, when given); returns the loop's summary.
    """
    from optimas_jax import methods
    methods.validate(config)
    summary = methods.run(self.task(train, val, test, complete), config, workdir)
    self.final_config = osys.SystemConfig.load(pathlib.Path(workdir) / "final_config",
                                               self.system.specs)
    self.write_back(self.final_config, save_to)
    summary["detail"]["parse"] = self.adapter.parse_stats() if hasattr(self.adapter, "parse_stats") else {}
    return summary


def from_dspy(program, metric, *, lms: dict[str, Any] | None = None, adapter=None,
              extra_components: Sequence[osys.Component] = (), max_workers: int = 8,
              counters: osys.Counters | None = None) -> DspyBridge:
  """Turns a dspy.Module and its metric `metric(example, prediction) -> float` into a bridge.

  `lms`: model name -> dspy.LM; with two or more, each predictor's LM is a
  ModelChoice among them (default: the predictor's own LM if it is one of
  them, else the first). With none, each predictor uses its own LM or
  DSPy's configured one.
  """
  if not isinstance(program, dspy.Module):
    raise DspyProgramError(f"expected a dspy.Module, got {type(program).__name__}")
  if not callable(metric):
    raise DspyProgramError("metric must be callable: metric(example, prediction) -> float")
  named = list(program.named_predictors())
  if not named:
    raise DspyProgramError(f"{type(program).__name__} has no predictors (dspy.Predict, "
                           "dspy.ChainOfThought, ...): nothing to optimize")
  lms = dict(lms or {})
  adapter = adapter if adapter is not None else OptimasAdapter()
  predictors, components, consumed, produced = {}, [], set(), {}
  for pname, predictor in named:
    _check_signature(pname, predictor)
    name = component_name(pname)
    if name in predictors:
      raise DspyProgramError(f"predictors {pname!r} and another map to the same component name "
                             f"{name!r}; rename one")
    predictors[name] = predictor
    sig = predictor.signature
    for f in sig.output_fields:
      if f in produced:
        raise DspyProgramError(
            f"output field {f!r} is written by both {produced[f]!r} and {pname!r}; the DAG "
            "follows field names, so rename one (e.g. via a custom signature)")
      produced[f] = pname
    consumed.update(sig.input_fields)
    model_field = None
    if len(lms) > 1:
      model_field = f"{name}_model"
      produced[model_field] = model_field
      consumed.add(model_field)
      own = next((m for m, lm in lms.items() if lm is predictor.lm), next(iter(lms)))
      components.append(osys.Component(
          model_field, f"Choose the language model that serves {pname}.",
          list(sig.input_fields), [model_field], _ChooseModel(model_field),
          osys.ModelChoice(tuple(lms), own), deterministic=True))
    components.append(osys.Component(
        name, (sig.instructions or pname).strip()[:300],
        list(sig.input_fields) + ([model_field] if model_field else []),
        list(sig.output_fields),
        osys.per_example(_PredictorCall(predictor, lms, adapter, model_field), max_workers),
        osys.Prompt(sig.instructions),
        deterministic=_greedy(predictor, lms)))
  for c in extra_components:
    consumed.update(c.input_fields)
    for f in c.output_fields:
      produced.setdefault(f, c.name)
  components += list(extra_components)      # System orders them topologically by fields
  input_fields = tuple(dict.fromkeys(f for c in components for f in c.input_fields
                                     if f not in produced))
  sinks = [f for f in produced if f not in consumed]
  sys_metric = osys.Metric(_MetricCall(metric, input_fields), sinks, name="metric")
  try:
    system = osys.System(components, input_fields, sys_metric, counters)
  except osys.SystemDefinitionError as e:
    raise DspyProgramError(f"the program's predictors do not form a System: {e}") from None
  return DspyBridge(program, system, predictors, lms, adapter, input_fields)


class _ChooseModel:
  """The model selector: every example gets the configured model name."""

  def __init__(self, field: str):
    self.field = field
    self.__name__ = "choose_model"

  def __call__(self, inputs, model, rng):
    del rng
    return [{self.field: model} for _ in inputs]


def _greedy(predictor, lms) -> bool:
  lm_list = list(lms.values()) or [predictor.lm or dspy.settings.lm]
  temps = [predictor.config.get("temperature", (lm.kwargs or {}).get("temperature", 0.0)
                                if lm is not None else None) for lm in lm_list]
  return all(t == 0 for t in temps)


class _PredictorCall:
  """One predictor call with the component's instruction and LM; per example (threads)."""

  def __init__(self, predictor, lms, adapter, model_field):
    self.predictor, self.lms, self.adapter, self.model_field = predictor, lms, adapter, model_field
    self.__name__ = "dspy_predictor"

  def __call__(self, inputs: dict, instruction: str, np_rng) -> dict:
    inputs = dict(inputs)
    lm = self.predictor.lm
    if self.model_field:
      lm = self.lms[inputs.pop(self.model_field)]
    elif lm is None and len(self.lms) == 1:
      lm = next(iter(self.lms.values()))
    signature = self.predictor.signature.with_instructions(instruction)
    call = dspy.Predict(signature, **self.predictor.config)
    call.demos = list(self.predictor.demos)
    seed = int(np_rng.integers(2**31))        # the server samples this example with it
    with dspy.context(adapter=self.adapter, **({"lm": lm} if lm is not None else {})):
      out = call(**inputs, config={"seed": seed})
    return {f: out[f] for f in signature.output_fields}


class _MetricCall:
  def __init__(self, metric, input_fields):
    self.metric, self.input_fields = metric, input_fields

  def __call__(self, example: dict, prediction: dict) -> float:
    ex = dspy.Example(**example).with_inputs(*self.input_fields)
    value = self.metric(ex, dspy.Prediction(**prediction))
    return metric_score(value, f" for the example {dict(ex.inputs())!r:.120}")
