"""The paper's peers on an optimas_jax task, through the real packages, at one budget.

  python -m optimas_jax.compare --config=experiments/geoqa.py --workdir=runs/peers \
      --methods=unoptimized,mipro_instructions,mipro,gepa,textgrad,optimas --seeds=0,1,2

Each peer optimizes the task's prompt components (its `Prompt` variables;
every other variable stays at its default: these libraries optimize text):

  mipro_instructions  dspy.MIPROv2, instructions only (0 bootstrapped, 0 labeled demos)
  mipro               dspy.MIPROv2, instructions and few-shot demos
  gepa                gepa.optimize, with a GEPAAdapter over the System's prompts
  textgrad            textgrad.TextualGradientDescent over the prompts, with
                      validation-and-revert after each step

What every method shares:
- The system: a peer's candidate prompts run through the task's own System
  (the same components, prompt format, parsing, decoding and per-example
  seeds as Optimas's runs). MIPROv2 sees the System as a dspy.Module with one
  dspy.Predict per prompt component; its few-shot demos (bootstrapped from
  the components' recorded inputs and outputs) are appended to the
  component's prompt text, the only text a component reads.
- The LLM: the peers' own calls (MIPROv2's proposer, GEPA's reflection,
  TextGrad's gradients and updates) go to the task's model served by
  `optimas_jax.llm.serve` on loopback (in-process, over the same weights),
  and nothing else: a run outside loopback is refused (env.LoopbackOnly).
- The budget: one system run is one example through the whole System (a
  DSPy metric call on a program run, a GEPA metric call, a TextGrad forward
  pass), counted by `system.counters`. Once `loop.budget_runs` is spent,
  further runs are refused (scored as failures, never run), so no method
  runs past the cap; `refused_runs` says how many a peer asked for beyond it.
  A candidate the System refuses (an empty instruction) scores every example
  as a failure without running (`invalid_candidate_runs`).
  Test (and the reported validation) evaluations are outside the budget, as
  for Optimas.
- Parse failures: the System's component failures during the budget, and
  the optimizer LM's replies that did not parse (MIPROv2: OptimasAdapter
  parse errors; GEPA: reflections without a ``` block, used whole; TextGrad:
  updates without <IMPROVED_VARIABLE> tags, step skipped), in `summary.parse`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import pathlib
import random
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from optimas_jax.metrics_log import MetricsLog
from optimas_jax.peers import env
from optimas_jax.system import Prompt, SystemConfig, VariableError, derive_seed

PEERS = ("mipro_instructions", "mipro", "gepa", "textgrad")


@dataclasses.dataclass(frozen=True)
class PeerSettings:
  """Each peer's knobs (defaults here; `config.peers.<field>` overrides)."""

  lm_max_tokens: int = 128          # the peers' own LM calls
  lm_temperature: float = 0.7
  mipro_candidates: int = 4         # instruction (and demo-set) candidates
  mipro_minibatch: int = 8
  mipro_full_eval_steps: int = 4
  mipro_demos: int = 2              # bootstrapped and labeled demos in the full mode
  mipro_threads: int = 8
  gepa_minibatch: int = 3
  gepa_max_tokens: int = 128
  textgrad_batch: int = 3
  textgrad_max_tokens: int = 96
  # Wall-clock limit of GEPA's and TextGrad's loops (0: none). TextGrad makes
  # ~10 LLM calls per 3 system runs; at SmolLM2-on-CPU speed the run budget
  # can take it hours. A peer stopped by it reports the runs it used.
  max_wall_s: float = 0.0


def settings(config) -> PeerSettings:
  given = dict(config.peers) if "peers" in config else {}
  unknown = sorted(set(given) - {f.name for f in dataclasses.fields(PeerSettings)})
  if unknown:
    raise ValueError(f"config.peers: unknown fields {unknown}; known: "
                     f"{[f.name for f in dataclasses.fields(PeerSettings)]}")
  return PeerSettings(**given)


# ------------------------------------------------------------------ the System


class PromptProgram:
  """The peers' view of a task: its prompt components as named texts; counted runs.

  `run(examples, texts)` runs the System with those prompt texts (the rest
  of the configuration at its defaults) and returns per-example scores and
  traces; past the budget cap an example is refused (score =
  `metric.failure_value`, trace None) instead of run.
  """

  def __init__(self, task, seed: int):
    self.task, self.system, self.seed = task, task.system, seed
    self.base = self.system.default_config()
    self.prompts = [n for n, s in self.system.specs.items() if isinstance(s, Prompt)]
    if not self.prompts:
      raise ValueError("the task's System has no Prompt variables; the peers (DSPy, GEPA, "
                       "TextGrad) optimize prompt text only")
    self.refused = 0
    self.invalid = 0                       # examples of candidates the System refused
    self._repeats: collections.Counter = collections.Counter()   # (example, texts) -> runs so far
    self._lock = threading.Lock()

  def texts(self, config: SystemConfig | None = None) -> dict[str, str]:
    config = config or self.base
    return {n: config[n] for n in self.prompts}

  def config(self, texts: Mapping[str, str]) -> SystemConfig:
    return self.base.override(**{n: texts[n] for n in self.prompts if n in texts})

  @property
  def budget_left(self) -> bool:
    return self.system.counters.admit(1) > 0

  def run(self, examples: Sequence[dict], texts: Mapping[str, str], score: bool = True):
    """(scores (n,), traces (None where refused)) of `examples` under `texts`.

    `score=False` for inputs without labels (DSPy's forward): scores stay at
    the failure value and the caller's metric scores the traces.
    """
    failure = self.system.metric.failure_value
    try:
      config = self.config(texts)
    except VariableError as e:
      # A proposal the System cannot take (e.g. GEPA reflecting an empty
      # instruction): every example is a counted failure; nothing ran, so
      # nothing is charged to the budget.
      with self._lock:
        self.invalid += len(examples)
      logging.warning("peer candidate refused, scored as %d failures: %s", len(examples), e)
      return np.full(len(examples), failure, np.float64), [None] * len(examples)
    with self._lock:                       # one batch at a time on the local model
      admitted = self.system.counters.admit(len(examples))
      self.refused += len(examples) - admitted
      scores = np.full(len(examples), failure, np.float64)
      traces: list = [None] * len(examples)
      if admitted:
        seeds = [self._example_seed(ex, texts) for ex in examples[:admitted]]
        result = self.system.run(list(examples[:admitted]), config, example_seeds=seeds)
        if score:
          scores[:admitted] = self.system.evaluate(list(examples[:admitted]), result)
        traces[:admitted] = result.traces
    return scores, traces

  def _example_seed(self, example: Mapping, texts: Mapping[str, str]) -> int:
    """The sampling seed of one run of `example` under `texts` (call under the lock).

    Keyed by the example itself, not by its batch or call number: DSPy's
    threads and GEPA's minibatches form batches by timing, and a seed that
    followed them made two runs of one config differ. Every candidate's
    first run of an example shares that example's seed (common random
    numbers, as in Optimas's validation); a repeat of the same candidate on
    the same example draws the next one.
    """
    example_key = json.dumps(example, sort_keys=True, default=str)
    texts_key = json.dumps({n: texts.get(n) for n in self.prompts}, sort_keys=True)
    repeat = self._repeats[(example_key, texts_key)]
    self._repeats[(example_key, texts_key)] += 1
    return derive_seed(self.seed, "peer_example", example_key, repeat)

  def component_failures(self) -> int:
    components = self.system.counters.snapshot()["components"]
    return int(sum(row["failures"] for row in components.values()))


class _Gather:
  """Gathers concurrent single-example runs (DSPy's threads) into System batches."""

  def __init__(self, program: PromptProgram, window_s: float = 0.05, max_batch: int = 16):
    self.program, self.window_s, self.max_batch = program, window_s, max_batch
    self._pending: list = []
    self._lock = threading.Lock()
    self._leader = False

  def run_one(self, example: dict, texts: Mapping[str, str]):
    future = concurrent.futures.Future()
    with self._lock:
      self._pending.append((json.dumps(texts, sort_keys=True), dict(texts), example, future))
      lead, self._leader = not self._leader, True
    if lead:
      time.sleep(self.window_s)
      with self._lock:
        batch, self._pending, self._leader = self._pending, [], False
      groups = collections.defaultdict(list)
      for key, texts_, ex, fut in batch:
        groups[key].append((texts_, ex, fut))
      for items in groups.values():
        for start in range(0, len(items), self.max_batch):
          chunk = items[start:start + self.max_batch]
          try:
            scores, traces = self.program.run([ex for _, ex, _ in chunk], chunk[0][0],
                                              score=False)
            for (_, _, fut), s, t in zip(chunk, scores, traces):
              fut.set_result((float(s), t))
          except Exception as e:  # pylint: disable=broad-except
            for _, _, fut in chunk:
              fut.set_exception(e)
    return future.result()


# ------------------------------------------------------------------ results


@dataclasses.dataclass
class PeerResult:
  texts: dict[str, str]                          # the final prompt of each component
  history: list[dict]                            # one record per accepted improvement
  optimizer_parse: dict[str, int]                # the optimizer LM's calls / parse failures
  detail: dict = dataclasses.field(default_factory=dict)


def _record_best(metrics: MetricsLog, history: list, iteration: int, val: float, budget: int,
                 accepted: bool, component: str = "prompts") -> None:
  metrics.write({"event": "iteration", "iteration": iteration, "component": component,
                 "val": val, "budget": budget, "accepted": accepted})
  history.append({"iteration": iteration, "component": component, "accepted": accepted,
                  "val": val, "budget": budget})


def _feedback(system, example: dict, trace, score: float) -> str:
  """What the metric says about one example's final output (GEPA feedback, TextGrad outcome)."""
  if trace is None:
    return "Not run: the budget of system runs was spent."
  if trace.failed:
    return f"The system failed: {trace.failure}. Score {score:.2f}."
  context = trace.context()
  produced = {f: context[f] for f in system.metric.fields}
  gold = {k: v for k, v in example.items() if k not in system.input_fields}
  return (f"Final output: {json.dumps(produced, default=str)[:400]}. Expected: "
          f"{json.dumps(gold, default=str)[:300]}. Score ({system.metric.name}): {score:.2f}.")


# ------------------------------------------------------------------ MIPROv2


def _render_demos(instruction: str, demos: Sequence, fields: Sequence[str]) -> str:
  """The component's prompt text with DSPy demos appended (its only text input)."""
  if not demos:
    return instruction
  blocks = []
  for d in demos:
    d = d.toDict() if hasattr(d, "toDict") else dict(d)
    lines = [f"{f.replace('_', ' ').capitalize()}: {d[f]}" for f in fields
             if d.get(f) is not None]
    if lines:
      blocks.append("\n".join(lines))
  return instruction if not blocks else instruction + "\n\nExamples:\n\n" + "\n\n".join(blocks)


def _system_module(program: PromptProgram, gather: _Gather):
  """The System as a dspy.Module: one dspy.Predict per prompt component."""
  dspy = env.require("dspy", what="MIPROv2")
  system = program.system

  class SystemProgram(dspy.Module):
    """Runs the optimas_jax System with the predictors' instructions (and demos) as prompts."""

    def __init__(self):
      super().__init__()
      self.component_names = list(program.prompts)
      for name in self.component_names:
        comp = system.components[name]
        sig = dspy.Signature(", ".join(comp.input_fields) + " -> " + ", ".join(comp.output_fields),
                             program.base[name])
        setattr(self, name, dspy.Predict(sig))

    def texts(self) -> dict[str, str]:
      out = {}
      for name in self.component_names:
        p = getattr(self, name)
        comp = system.components[name]
        out[name] = _render_demos(p.signature.instructions, p.demos,
                                  list(comp.input_fields) + list(comp.output_fields))
      return out

    def forward(self, **inputs):
      score, trace = gather.run_one({f: inputs[f] for f in system.input_fields}, self.texts())
      del score                      # scored by the metric, with the example's labels
      if trace is None or trace.failed:
        return dspy.Prediction(optimas_trace=trace)
      # What DSPy's bootstrapping reads: each predictor's inputs and outputs.
      if dspy.settings.trace is not None:
        for name in self.component_names:
          if name in trace.steps:
            step = trace.steps[name]
            dspy.settings.trace.append((getattr(self, name), dict(step.inputs),
                                        dspy.Prediction(**step.outputs)))
      context = trace.context()
      return dspy.Prediction(optimas_trace=trace,
                             **{f: context[f] for f in system.metric.fields})

  return SystemProgram()


def run_mipro(program: PromptProgram, served, workdir: pathlib.Path, peer: PeerSettings,
              with_demos: bool, metrics: MetricsLog, budget: int) -> PeerResult:
  dspy = env.require("dspy", workdir, "MIPROv2")
  from optimas_jax.peers.dspy_adapter import OptimasAdapter
  system = program.system
  gather = _Gather(program)
  student = _system_module(program, gather)
  history: list = []
  best = {"val": -1.0}

  def metric(example, prediction, trace=None):
    del trace
    t = prediction.get("optimas_trace") if hasattr(prediction, "get") else None
    if t is None or t.failed:
      return system.metric.failure_value
    return float(system.metric.fn(example.toDict(), t.context()))

  train = [dspy.Example(**ex).with_inputs(*system.input_fields)
           for ex in program.task.splits["train"]]
  val = [dspy.Example(**ex).with_inputs(*system.input_fields)
         for ex in program.task.splits["val"]]
  demos = peer.mipro_demos if with_demos else 0
  minibatch = min(peer.mipro_minibatch, len(val))
  # MIPROv2 fixes its trials up front: as many as the budget pays for (the
  # initial full evaluation, then a minibatch per trial and a full evaluation
  # every `full_eval_steps`). It fails once every candidate combination has
  # had its full evaluation, so there are enough candidates for the trials.
  # It cannot be stopped exactly: it ends at its last trial, or at the cap
  # (runs past it are refused at once), and reports the runs it used.
  steps = peer.mipro_full_eval_steps
  trials = max(2, int((budget - len(val)) // (minibatch + len(val) / steps))) if budget else 20
  full_evals = -(-trials // steps) + 2
  candidates = max(peer.mipro_candidates,
                   full_evals if not demos else int(np.ceil(np.sqrt(full_evals))))
  adapter = OptimasAdapter(first_line=False)
  lm = served.dspy_lm(workdir, max_tokens=peer.lm_max_tokens, temperature=peer.lm_temperature)
  optimizer = dspy.MIPROv2(metric=metric, prompt_model=lm, task_model=lm, auto=None,
                           num_candidates=candidates, max_bootstrapped_demos=demos,
                           max_labeled_demos=demos, num_threads=peer.mipro_threads,
                           max_errors=10**6, seed=program.seed, verbose=False)
  with dspy.context(lm=lm, adapter=adapter):
    compiled = optimizer.compile(
        student, trainset=train, valset=val, num_trials=trials, minibatch=len(val) > minibatch,
        minibatch_size=minibatch, minibatch_full_eval_steps=steps,
        program_aware_proposer=False, data_aware_proposer=True, seed=program.seed)
  trial_logs = getattr(compiled, "trial_logs", {}) or {}
  # MIPROv2 counts its trial evaluations only; its bootstrapping runs came first.
  calls = [int(log.get("total_eval_calls_so_far", 0)) for log in trial_logs.values()]
  offset = max(0, system.counters.budget_used - max(calls, default=0))
  for i, log in sorted(trial_logs.items()):
    score = log.get("full_eval_score")
    if score is not None and score / 100 > best["val"]:     # DSPy's Evaluate: percent
      best["val"] = score / 100
      _record_best(metrics, history, int(i), best["val"],
                   offset + int(log.get("total_eval_calls_so_far", 0)), int(i) > 1)
  return PeerResult(compiled.texts(), history, adapter.parse_stats(),
                    {"trials_planned": trials, "candidates": candidates,
                     "trials_logged": len(trial_logs),
                     "demos": {n: len(getattr(compiled, n).demos)
                               for n in compiled.component_names}})


# ------------------------------------------------------------------ GEPA


class SystemGEPAAdapter:
  """gepa's adapter interface over the System's prompt components (a candidate = their texts)."""

  propose_new_texts = None            # GEPA's own reflective proposer, with the served LM

  def __init__(self, program: PromptProgram):
    self.program = program

  def evaluate(self, batch, candidate, capture_traces=False):
    from gepa import EvaluationBatch
    scores, traces = self.program.run(batch, candidate)
    outputs = [None if t is None or t.failed else
               {f: t.context()[f] for f in self.program.system.metric.fields} for t in traces]
    trajectories = None
    if capture_traces:
      trajectories = [{"example": ex, "trace": t, "score": float(s)}
                      for ex, t, s in zip(batch, traces, scores)]
    return EvaluationBatch(outputs=outputs, scores=[float(s) for s in scores],
                           trajectories=trajectories)

  def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
    system = self.program.system
    out = {}
    for name in components_to_update:
      records = []
      for traj in eval_batch.trajectories or []:
        trace = traj["trace"]
        if trace is None or name not in trace.steps:
          continue
        step = trace.steps[name]
        records.append({"Inputs": {k: str(v)[:600] for k, v in step.inputs.items()},
                        "Generated Outputs": {k: str(v)[:400] for k, v in step.outputs.items()},
                        "Feedback": _feedback(system, traj["example"], trace, traj["score"])})
      out[name] = records
    return out


class _FenceCounter:
  """Wraps GEPA's reflection LM: counts replies with no ``` block (GEPA then uses them whole)."""

  def __init__(self, lm):
    self.lm, self.calls, self.misses = lm, 0, 0
    self._lock = threading.Lock()

  def __call__(self, prompt):
    text = self.lm(prompt)
    with self._lock:
      self.calls += 1
      self.misses += int(text.count("```") < 2)
    return text

  def stats(self) -> dict[str, int]:
    return {"calls": self.calls, "parse_failures": self.misses}


class _BudgetStopper:
  """Stops GEPA when the run budget is spent or the wall-clock limit has passed."""

  def __init__(self, program: PromptProgram, deadline: float):
    self.program, self.deadline = program, deadline
    self.stopped_by = ""

  def __call__(self, gepa_state) -> bool:
    del gepa_state
    if not self.program.budget_left:
      self.stopped_by = "budget"
    elif time.time() > self.deadline:
      self.stopped_by = "max_wall_s"
    return bool(self.stopped_by)


def _deadline(peer: PeerSettings) -> float:
  return time.time() + peer.max_wall_s if peer.max_wall_s > 0 else float("inf")


def run_gepa(program: PromptProgram, served, workdir: pathlib.Path, peer: PeerSettings,
             metrics: MetricsLog, budget: int) -> PeerResult:
  gepa = env.require("gepa", what="GEPA")
  reflection = _FenceCounter(served.gepa_lm(max_tokens=peer.gepa_max_tokens,
                                            temperature=peer.lm_temperature))
  train, val = program.task.splits["train"], program.task.splits["val"]
  stopper = _BudgetStopper(program, _deadline(peer))
  result = gepa.optimize(
      seed_candidate=program.texts(), trainset=list(train), valset=list(val),
      adapter=SystemGEPAAdapter(program), reflection_lm=reflection,
      reflection_minibatch_size=peer.gepa_minibatch,
      max_metric_calls=budget or None, stop_callbacks=[stopper],
      run_dir=None, seed=program.seed, display_progress_bar=False,
      raise_on_exception=False, perfect_score=1.0, skip_perfect_score=True)
  history: list = []
  best = -1.0
  for i, (score, calls) in enumerate(zip(result.val_aggregate_scores,
                                         result.discovery_eval_counts)):
    if score > best:
      best = score
      _record_best(metrics, history, i, float(score), int(calls), i > 0)
  return PeerResult(dict(result.best_candidate), history, reflection.stats(),
                    {"candidates": len(result.candidates),
                     "gepa_metric_calls": result.total_metric_calls,
                     "stopped_by": stopper.stopped_by or "gepa"})


# ------------------------------------------------------------------ TextGrad


def run_textgrad(program: PromptProgram, served, workdir: pathlib.Path, peer: PeerSettings,
                 metrics: MetricsLog, budget: int) -> PeerResult:
  """TextGrad's prompt optimization: forward passes of the System, an LLM loss on the
  outcome, textual gradients back to each prompt, a TGD step, then validation and revert."""
  tg = env.require("textgrad", what="TextGrad")
  from textgrad.autograd.function import BackwardContext
  from textgrad.autograd.llm_ops import LLMCall

  system = program.system
  engine = served.textgrad_engine(workdir, max_tokens=peer.textgrad_max_tokens)
  prompts = {n: tg.Variable(program.base[n], requires_grad=True,
                            role_description=f"system prompt of the step '{n}': "
                                             f"{system.components[n].description}")
             for n in program.prompts}
  optimizer = tg.TextualGradientDescent(parameters=list(prompts.values()), engine=engine)
  loss_fn = tg.TextLoss(
      "You evaluate one example's run of an AI pipeline: its final output, the expected "
      "output and the score. Say briefly what went wrong and which step should change.",
      engine=engine)
  train, val = list(program.task.splits["train"]), list(program.task.splits["val"])
  rng = random.Random(program.seed)
  texts = program.texts()
  val_score = float(program.run(val, texts)[0].mean())
  metrics.write({"event": "init", "val": val_score, "budget": system.counters.budget_used})
  history, step, updates, unparsed = [], 0, 0, 0
  deadline, stopped_by = _deadline(peer), "budget"
  while program.budget_left:
    if time.time() > deadline:
      stopped_by = "max_wall_s"
      break
    batch = rng.sample(train, min(peer.textgrad_batch, len(train)))
    scores, traces = program.run(batch, texts)
    losses = []
    for ex, trace, score in zip(batch, traces, scores):
      if trace is None or trace.failed:
        continue
      outputs = []
      for name in program.prompts:
        if name not in trace.steps:
          continue
        st = trace.steps[name]
        prompt_text = "\n".join(f"{k}: {v}" for k, v in st.inputs.items())
        inp = tg.Variable(prompt_text, requires_grad=False, role_description=f"input to {name}")
        out = tg.Variable("\n".join(f"{k}: {v}" for k, v in st.outputs.items()),
                          predecessors=[prompts[name], inp],
                          role_description=f"output of the step '{name}'")
        out.set_grad_fn(BackwardContext(backward_fn=LLMCall(engine, prompts[name]).backward,
                                        response=out, prompt=prompt_text,
                                        system_prompt=prompts[name].value))
        outputs.append(out)
      if not outputs:
        continue
      outcome = tg.Variable(_feedback(system, ex, trace, float(score)), predecessors=outputs,
                            role_description="final result of the pipeline on this example")
      outcome.set_grad_fn(BackwardContext(
          backward_fn=LLMCall(engine).backward, response=outcome,
          prompt="\n\n".join(o.value for o in outputs),
          system_prompt="(the rest of the pipeline: it turns the steps' outputs into the "
                        "final output)"))
      losses.append(loss_fn(outcome))
    if not losses:
      stopped_by = "no_trace"
      break
    optimizer.zero_grad()
    tg.sum(losses).backward(engine)
    candidate = dict(texts)
    for name, var in prompts.items():
      before = var.value
      try:
        optimizer.parameters = [var]
        optimizer.step()
        updates += 1
      except IndexError:          # the reply had no <IMPROVED_VARIABLE> tags
        unparsed += 1
        updates += 1
      if not var.value.strip():
        var.set_value(before)
      candidate[name] = var.value
    optimizer.parameters = list(prompts.values())
    if candidate != texts and program.budget_left:
      new_val = float(program.run(val, candidate)[0].mean())
      accepted = new_val > val_score
      if accepted:
        texts, val_score = candidate, new_val
      _record_best(metrics, history, step, val_score, system.counters.budget_used, accepted)
    for name, var in prompts.items():          # revert a rejected step
      var.set_value(texts[name])
    step += 1
  return PeerResult(texts, history, {"calls": updates, "parse_failures": unparsed},
                    {"steps": step, "stopped_by": stopped_by})


RUNNERS = {
    "mipro_instructions": lambda *a, **k: run_mipro(*a[:4], with_demos=False, **k),
    "mipro": lambda *a, **k: run_mipro(*a[:4], with_demos=True, **k),
    "gepa": run_gepa,
    "textgrad": run_textgrad,
}


# ------------------------------------------------------------------ entry


def run(task, config, workdir: str) -> dict:
  """Runs the peer `config.method` on `task`; the summary has OptimasLoop.finish's shape."""
  from optimas_jax.peers.served import ServedModel
  if config.method not in RUNNERS:
    raise ValueError(f"config.method={config.method!r} is not a peer; peers: {list(RUNNERS)}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  summary_path = workdir / "summary.json"
  if summary_path.exists():               # a peer run is not resumable mid-way: done is done
    return json.loads(summary_path.read_text())
  peer = settings(config)
  if task.llm is None:
    raise ValueError("the peers call the task's LLM through the server; this task has none "
                     "(config.system.llm is empty)")
  counters = task.system.counters
  budget = int(config.loop.budget_runs)
  counters.set_budget_cap(budget)
  program = PromptProgram(task, config.seed)
  metrics = MetricsLog(workdir / "metrics.jsonl")
  metrics.drop(lambda r: True)
  served = ServedModel.start(task.llm, getattr(task.llm, "name", "local"),
                             seed=derive_seed(config.seed, "served"),
                             max_tokens=peer.lm_max_tokens, temperature=peer.lm_temperature)
  started = time.time()
  try:
    with env.LoopbackOnly() as guard:
      if config.method.startswith("mipro") or config.method == "gepa":
        metrics.write({"event": "init", "val": float("nan"), "budget": 0})
      result = RUNNERS[config.method](program, served, workdir, peer, metrics=metrics,
                                      budget=budget)
    server_stats = served.stats()
  finally:
    served.close()
  wall = time.time() - started
  final = program.config(result.texts)
  snapshot = counters.snapshot()
  with counters.unmetered():             # reporting, outside the budget (as Optimas's test)
    val, _ = _evaluate(task, final, "val", config.seed)
    before_test = counters.snapshot()["unmetered_runs"]
    test, extra = _evaluate(task, final, "test", config.seed, int(config.loop.test_repeats))
  summary = {
      "method": config.method, "seed": config.seed, "test": float(test.mean()),
      "test_extra": extra, "val": float(val.mean()), "iterations": len(result.history),
      "budget_runs": snapshot["system_runs"] + snapshot["partial_runs"],
      "budget_cap": budget, "refused_runs": program.refused,
      "invalid_candidate_runs": program.invalid,
      "test_runs": counters.snapshot()["unmetered_runs"] - before_test,
      "wall_s": wall, "config": final.json_values(), "counters": snapshot,
      "history": result.history, "peer": result.detail,
      "parse": {"system_failures": program.component_failures(),
                "optimizer_calls": result.optimizer_parse.get("calls", 0),
                "optimizer_parse_failures": result.optimizer_parse.get("parse_failures", 0)},
      "served": server_stats, "outside_loopback": guard.outside,
      "llm_usage": task.usage(),
  }
  final.save(workdir / "final_config")
  summary_path.write_text(json.dumps(summary, indent=2, default=float))
  logging.info("%s seed %s: test %.3f val %.3f runs %d (refused %d) parse %s", config.method,
               config.seed, summary["test"], summary["val"], summary["budget_runs"],
               program.refused, summary["parse"])
  return summary


def _evaluate(task, config: SystemConfig, split: str, seed: int, repeats: int = 1):
  """Per-example scores (mean over seeded passes) and extra metrics: OptimasLoop.evaluate's rule."""
  system, examples = task.system, task.splits[split]
  scores, extra = [], {}
  for r in range(repeats):
    result = system.run(examples, config, seed=derive_seed(seed, split, r))
    scores.append(system.evaluate(examples, result))
    for name, fn in task.extra_metrics.items():
      extra.setdefault(name, []).append(fn(examples, result))
    extra.setdefault("failed", []).append(result.num_failed)
  return np.mean(scores, axis=0), {k: float(np.mean(v)) for k, v in extra.items()}
