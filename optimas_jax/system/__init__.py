"""The compound-system core: components, variables, the DAG, configurations."""

from optimas_jax.system.component import Component, ComponentContractError
from optimas_jax.system.config import SystemConfig
from optimas_jax.system.counters import BudgetSpent, Counters
from optimas_jax.system.execution import ExampleFailure, RetryPolicy, per_example
from optimas_jax.core.seeds import BatchRng, derive_seed
from optimas_jax.system.system import Metric, RunResult, System, SystemDefinitionError, Trace
from optimas_jax.system.variables import (Choice, FloatRange, Hyperparameters, IntRange,
                                          ModelChoice, ModelParameters, Prompt, VariableError)

__all__ = [
    "BatchRng", "BudgetSpent", "Choice", "Component", "ComponentContractError", "Counters", "ExampleFailure",
    "FloatRange", "Hyperparameters", "IntRange", "Metric", "ModelChoice", "ModelParameters",
    "Prompt", "RetryPolicy", "RunResult", "System", "SystemConfig", "SystemDefinitionError",
    "Trace", "VariableError", "derive_seed", "per_example",
]
