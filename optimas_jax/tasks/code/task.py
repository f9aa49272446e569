"""Builds the code generation task (HumanEval offline, BigCodeBench from a file)."""

from __future__ import annotations

from optimas_jax.llm.factory import LLMPool
from optimas_jax.sandbox import Limits, Sandbox
from optimas_jax.tasks import llm_calls
from optimas_jax.tasks.base import Task
from optimas_jax.tasks.code import harness
from optimas_jax.tasks.code import system as code_system
from optimas_jax.tasks.data import code as code_data
from optimas_jax.tasks.pubmedqa.task import limit_splits

DATASETS = ("humaneval", "bigcodebench")


def load(data):
  """The configured dataset's splits (config.data)."""
  if data.name == "humaneval":
    s = data.humaneval_split
    return code_data.load_humaneval(data.path or None, data.on_error, s.train, s.val, s.seed)
  if data.name == "bigcodebench":
    s = data.bigcodebench_split
    return code_data.load_bigcodebench(data.path or None, data.on_error, s.train_size, s.seed)
  raise ValueError(f"config.data.name={data.name!r}: choose one of {DATASETS}")


# What generated code may not run without (unless config.sandbox.allow_weak_isolation).
REQUIRED_ISOLATION = ("net", "mount", "pid", "hidden", "disk")


def make_sandbox(cfg, data_path: str = "") -> Sandbox:
  """The sandbox from config.sandbox, with the benchmark's data hidden from the programs;
  raises SandboxError at once if this machine cannot run it or cannot isolate it."""
  limits = Limits(wall_s=cfg.wall_s, cpu_s=cfg.cpu_s, memory_bytes=cfg.memory_mb << 20,
                  file_bytes=cfg.file_mb << 20, processes=cfg.processes,
                  disk_bytes=cfg.disk_mb << 20,
                  output_bytes=cfg.output_kb << 10, kept_output_bytes=cfg.kept_output_kb << 10)
  require = () if cfg.allow_weak_isolation else REQUIRED_ISOLATION
  return Sandbox(limits, workers=cfg.workers, network=cfg.network,
                 hide=harness.benchmark_paths([data_path] if data_path else []),
                 require=require)


def validate(config) -> None:
  """config.sandbox's fields, checked before the LLM loads."""
  cfg = config.sandbox
  for field in ("workers", "wall_s", "cpu_s", "memory_mb", "file_mb", "processes", "output_kb",
                "kept_output_kb"):
    if not cfg[field] > 0:
      raise ValueError(f"config.sandbox.{field}={cfg[field]}; use > 0")
  if cfg.disk_mb <= 0:
    raise ValueError(f"config.sandbox.disk_mb={cfg.disk_mb}; use > 0")
  if cfg.network not in ("auto", "hook", "namespace"):
    raise ValueError(f"config.sandbox.network={cfg.network!r}; choose auto, hook or namespace")
  if not isinstance(cfg.allow_weak_isolation, bool):
    raise ValueError("config.sandbox.allow_weak_isolation: use True or False")


def short_questions(splits: dict, max_chars: int) -> dict:
  """Each split's problems whose question has at most `max_chars` characters (0: all)."""
  if max_chars < 0:
    raise ValueError(f"config.data.max_question_chars={max_chars}; use 0 (all) or a positive "
                     "count")
  if not max_chars:
    return splits
  return {name: [ex for ex in rows if len(ex["question"]) <= max_chars]
          for name, rows in splits.items()}


def build(config) -> Task:
  splits = short_questions(load(config.data).splits, config.data.max_question_chars)
  splits = limit_splits(splits, config.data.limit)
  sandbox = make_sandbox(config.sandbox, config.data.path)
  hidden = code_system.HiddenTests(sandbox)
  pool = LLMPool(config.llm)
  llm = pool.get()
  s = config.system
  system = code_system.build_system(llm, sandbox, hidden, s.temperature, s.final_temperature,
                                    dict(s.max_tokens), s.feedback_chars, tuple(s.test_choices),
                                    s.prefill)
  return Task(system=system, splits=splits, llm=llm, llm_pool=pool, hints=code_system.HINTS,
              complete=llm_calls.completer(pool.get(s.proposer or None)),
              extra_metrics=code_system.extra_metrics(hidden))
