"""The Optimas loop (Algorithm 1), its baselines, the validation gate and its state."""

from optimas_jax.loop.driver import OptimasLoop, run, run_method
from optimas_jax.loop.methods import METHODS

__all__ = ["METHODS", "OptimasLoop", "run", "run_method"]
