"""Prompt optimization against a local reward: OPRO proposals plus edits.

OPRO (Yang et al. 2023): an LLM sees the (prompt, score) history in
ascending score order and proposes new prompts. A 135M model is a weak
proposer, so mutation and crossover edits over the history and a task's
hint sentences keep exploring when its proposals are poor. The incumbent is
always in the pool, so the chosen prompt never scores below it.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from optimas_jax.optimize.search import SearchResult

# (prompts, seed) -> completions, one per prompt; supplied by an LLM backend.
Complete = Callable[[Sequence[str], int], Sequence[str]]

META_PROMPT = """You write instructions for one step of an AI pipeline.
Step: {description}

Previous instructions and their scores (higher is better), worst first:
{history}

Write one new instruction for this step that is different from all of the above and likely to score higher. Reply with the instruction only."""


def _sentences(text: str) -> list[str]:
  return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def clean_proposal(text: str, max_chars: int = 300) -> str | None:
  """The first non-empty line, unquoted and without list or label markup.

  None when nothing usable is left, or when the text still carries template
  placeholders or markup (a weak proposer often echoes them).
  """
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
  if not lines:
    return None
  text = re.sub(r"^([-*\d.)\s]+|(new )?instruction\s*:\s*|title\s*:\s*)", "", lines[0],
                flags=re.I).strip().strip('"\'` ')
  if len(text) < 8 or any(c in text for c in "{}<>#|"):
    return None
  if re.match(r"^(score|a|answer|step)\s*:", text, flags=re.I):
    return None   # an echo of the meta-prompt's history, not an instruction
  return text[:max_chars]


def opro_proposals(complete: Complete, description: str, history: Sequence[tuple[str, float]],
                   num: int, seed: int, max_history: int = 8) -> list[str]:
  """`num` LLM proposals from the ascending (prompt, score) history."""
  shown = sorted(history, key=lambda t: t[1])[-max_history:]
  lines = "\n".join(f"Instruction: {p}\nScore: {s:.3f}" for p, s in shown)
  meta = META_PROMPT.format(description=description, history=lines or "(none yet)")
  outs = complete([meta] * num, seed)
  return [p for p in (clean_proposal(o) for o in outs) if p]


def edit_proposals(pool: Sequence[str], hints: Sequence[str], num: int,
                   rng: np.random.Generator) -> list[str]:
  """Mutations (add a hint, drop or swap a sentence) and crossovers of the pool."""
  out = []
  for _ in range(num * 4):
    if len(out) >= num:
      break
    base = _sentences(pool[int(rng.integers(len(pool)))])
    op = rng.choice(["add", "drop", "swap", "cross"])
    if op == "add" and hints:
      hint = hints[int(rng.integers(len(hints)))]
      if hint not in base:
        base.insert(int(rng.integers(len(base) + 1)), hint)
    elif op == "drop" and len(base) > 1:
      base.pop(int(rng.integers(len(base))))
    elif op == "swap" and len(base) > 1:
      i, j = rng.choice(len(base), size=2, replace=False)
      base[i], base[j] = base[j], base[i]
    elif op == "cross" and len(pool) > 1:
      other = _sentences(pool[int(rng.integers(len(pool)))])
      base = base[: (len(base) + 1) // 2] + other[len(other) // 2:]
    text = " ".join(dict.fromkeys(base))      # drop repeated sentences, keep order
    if text and text not in pool and text not in out:
      out.append(text)
  return out


def optimize_prompt(current: str, history: Sequence[tuple[str, float]],
                    evaluate: Callable[[Sequence[str]], np.ndarray], *, description: str,
                    hints: Sequence[str], num_llm: int, num_edits: int,
                    complete: Complete | None, rng: np.random.Generator) -> SearchResult:
  """Proposes prompts and returns the best under the local reward (incumbent included)."""
  pool = list(dict.fromkeys([current] + [p for p, _ in history]))
  proposals: list[str] = []
  if complete is not None and num_llm > 0:
    proposals += opro_proposals(complete, description, history or [(current, 0.0)], num_llm,
                                seed=int(rng.integers(2**31)))
  proposals += edit_proposals(pool, hints, num_edits, rng)
  candidates = [current] + [p for p in dict.fromkeys(proposals) if p != current]
  scores = np.asarray(evaluate(candidates), dtype=np.float64)
  table = list(zip(candidates, scores.tolist()))
  best = int(np.argmax(scores))                   # ties keep the incumbent (index 0)
  return SearchResult(candidates[best], float(scores[best]), table)
