"""TRL side of experiments/benchmarks/rl_step.py (run by it; never imports JAX).

  python experiments/benchmarks/rl_step_trl.py --spec=SPEC.json

GRPOTrainer (trl) + a peft LoRA on the LlamaForCausalLM that rl_step.py's
prepare step wrote from our float32 SmolLM2 weights, with the settings of
the spec (see rl_step.py). A step is timed from the trainer's
on_step_begin to on_step_end callback, which spans generation, the
reference (adapter-disabled) pass, forward/backward and the optimizer step.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
# pylint: disable-next=wrong-import-position
from rl_step import emit, loadavg, peak_rss_mb, vowel_fraction


def run_trl(spec: dict) -> dict:
  # pylint: disable=import-outside-toplevel
  import datasets
  import peft
  import torch
  torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
  import transformers
  import trl
  # pylint: enable=import-outside-toplevel
  load_start = loadavg()
  t0 = time.perf_counter()
  torch.manual_seed(spec["seed"])
  tokenizer = transformers.PreTrainedTokenizerFast(
      tokenizer_file=str(pathlib.Path(spec["hf_dir"]) / "tokenizer.json"),
      pad_token=spec["pad_token"], eos_token=spec["eos_tokens"][0])
  ids = tokenizer(spec["prompts"])["input_ids"]        # as GRPOTrainer tokenizes them
  if ids != spec["prompt_ids"]:
    raise RuntimeError("TRL side tokenized the prompts differently from the spec")
  model = transformers.LlamaForCausalLM.from_pretrained(spec["hf_dir"], dtype=torch.float32)
  model.generation_config.eos_token_id = spec["eos_ids"]
  model.generation_config.pad_token_id = spec["pad_id"]
  rows = spec["num_prompts"] * spec["group_size"]
  total_steps = spec["warmup"] + spec["steps"]
  # Each step takes the B prompts (in order), each repeated G times by GRPO's sampler.
  data = datasets.Dataset.from_dict({"prompt": spec["prompts"] * total_steps})

  def reward(prompts, completions, **kwargs):
    del prompts, kwargs
    return vowel_fraction(completions)

  class StepClock(transformers.TrainerCallback):
    def __init__(self):
      self.begin, self.seconds = None, []

    def on_step_begin(self, args, state, control, **kwargs):
      self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
      self.seconds.append(time.perf_counter() - self.begin)

  clock = StepClock()
  # TRL times its phases (generation, reward, ...) with profiling_context and
  # sends them to wandb/mlflow only; collect them here for the breakdown.
  from trl.extras import profiling  # pylint: disable=import-outside-toplevel
  phases: dict[str, list[float]] = {}
  profiling.ProfilingContext._log_metrics = (  # pylint: disable=protected-access
      lambda self, duration: phases.setdefault(self.name, []).append(duration))
  with tempfile.TemporaryDirectory(prefix="rl_step_trl-") as out_dir:
    config = trl.GRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=rows,
        num_generations=spec["group_size"], max_completion_length=spec["new_tokens"],
        gradient_accumulation_steps=1, steps_per_generation=1,
        num_iterations=spec["inner_epochs"], beta=spec["beta"], epsilon=0.2,
        loss_type="dapo", scale_rewards="group", learning_rate=spec["lr"],
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        temperature=1.0, top_p=1.0, top_k=0,
        # Exactly T new tokens per row, as the JAX side (stop_at_eos=False).
        generation_kwargs={"min_new_tokens": spec["new_tokens"]},
        max_steps=total_steps, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, bf16=False, seed=spec["seed"], shuffle_dataset=False,
        dataloader_num_workers=0, disable_dropout=True, log_completions=False)
    lora_config = peft.LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"],
                                  target_modules=list(spec["targets"]), lora_dropout=0.0,
                                  bias="none", task_type="CAUSAL_LM")
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=config,
                              train_dataset=data, processing_class=tokenizer,
                              peft_config=lora_config, callbacks=[clock])
    setup_s = time.perf_counter() - t0
    trainer.train()
    history = [h for h in trainer.state.log_history if "reward" in h]
  timed = clock.seconds[spec["warmup"]:]
  step_s = statistics.median(timed)
  lengths = [h.get("completions/mean_length") for h in history]
  tokens = rows * spec["new_tokens"]
  if any(l is not None and round(l) != spec["new_tokens"] for l in lengths):
    raise RuntimeError(f"TRL completions averaged {lengths} tokens; expected "
                       f"{spec['new_tokens']}")
  return dict(framework=f"trl {trl.__version__}, peft {peft.__version__}, torch "
                        f"{torch.__version__} ({torch.get_num_threads()} threads), "
                        f"transformers {transformers.__version__}",
              step_seconds_median=round(step_s, 3), tokens_per_s=round(tokens / step_s, 2),
              warmup_step_seconds=[round(s, 3) for s in clock.seconds[:spec["warmup"]]],
              step_seconds=[round(s, 3) for s in timed], setup_seconds=round(setup_s, 2),
              reward_mean=[h.get("reward") for h in history],
              completion_length=lengths, peak_rss_mb=peak_rss_mb(),
              # TRL's own timers: seconds per step, median over the timed steps.
              phases_median={k: round(_timed_median(v, total_steps, spec["warmup"]), 3)
                             for k, v in phases.items()},
              loadavg_start=load_start, loadavg_end=loadavg())


def _timed_median(per_call: list[float], steps: int, warmup: int) -> float:
  """Median per-step total of a phase timed ``len(per_call) / steps`` times a step."""
  calls = max(len(per_call) // steps, 1)
  per_step = [sum(per_call[i:i + calls]) for i in range(0, len(per_call), calls)]
  return statistics.median(per_step[warmup:] or per_step)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--spec", required=True)
  args = p.parse_args()
  emit(run_trl(json.loads(pathlib.Path(args.spec).read_text())))


if __name__ == "__main__":
  main()
