"""What the loop needs to continue after a crash, apart from array pytrees."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class LoopState:
  """Saved as JSON beside the arrays in every checkpoint (loop/optimas.py)."""

  iteration: int = 0                       # next iteration to run
  initialized: bool = False
  val_score: float | None = None           # the incumbent's mean validation score
  history: list = dataclasses.field(default_factory=list)
  prompt_history: dict = dataclasses.field(default_factory=dict)
  selector: dict = dataclasses.field(default_factory=dict)
  replay: dict | None = None
  counters: dict | None = None
  # Per-example validation scores of every configuration evaluated, by its
  # variable hashes: the gate's memo (a resumed run must not pay for them again).
  val_memo: dict = dataclasses.field(default_factory=dict)
  rollout_cache: dict | None = None        # the rollout cache's hit and miss counters
  llm_usage: dict | None = None            # the LLM backends' usage and ledger
  wall_s: float = 0.0
  gates: int = 0                           # validation gates run so far (the error spending)
  lrf_text: dict | None = None             # the LRF text encoder's counts (lrf/text.py)
