"""TextGrad's prompt optimization (TextualGradientDescent), with validation and revert.

Updates without <IMPROVED_VARIABLE> tags are counted and the step skipped.
"""

from __future__ import annotations

import pathlib
import random
import time

from optimas_jax.metrics_log import MetricsLog
from optimas_jax.peers import env
from optimas_jax.peers.method import PeerMethod
from optimas_jax.peers.program import PeerResult, PromptProgram, deadline, feedback, record_best
from optimas_jax.peers.settings import PeerSettings


def search(program: PromptProgram, served, workdir: pathlib.Path, peer: PeerSettings,
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
  ends_at, stopped_by = deadline(peer), "budget"
  while program.budget_left:
    if time.time() > ends_at:
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
      outcome = tg.Variable(feedback(system, ex, trace, float(score)), predecessors=outputs,
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
      record_best(metrics, history, step, val_score, system.counters.budget_used, accepted)
    for name, var in prompts.items():          # revert a rejected step
      var.set_value(texts[name])
    step += 1
  return PeerResult(texts, history, {"calls": updates, "parse_failures": unparsed},
                    {"steps": step, "stopped_by": stopped_by})


METHOD = PeerMethod("textgrad", search)
