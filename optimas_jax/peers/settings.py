"""Each peer's knobs: defaults here, `config.peers.<field>` overrides, checked at start-up."""

from __future__ import annotations

import dataclasses


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
