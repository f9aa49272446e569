"""The harness every method runs in, Optimas's variants, the gate and the loop's state.

  harness     budget, evaluation, metrics.jsonl, summary.json: written once
  method      the Method interface (optimize a Harness run -> Outcome)
  optimas     Algorithm 1 and its ablations, as variants of two choices
  objectives  what scores a local step's candidates (LRF or true metric)
  gate        the paired validation test
"""

from optimas_jax.loop.harness import Harness, Outcome
from optimas_jax.loop.optimas import VARIANTS, OptimasVariant

__all__ = ["Harness", "OptimasVariant", "Outcome", "VARIANTS"]
