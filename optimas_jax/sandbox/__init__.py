"""A sandbox for untrusted Python: one job, running a program with limits (executor.py)."""

from optimas_jax.sandbox.executor import STATUSES, Limits, Result, Sandbox, SandboxError

__all__ = ["STATUSES", "Limits", "Result", "Sandbox", "SandboxError"]
