"""The LLM interface (``LLM``, ``SamplingParams``, ``Generation``) and its backends.

Backends are imported from their modules (``optimas_jax.llm.local``) so that
importing the interface stays light.
"""

from optimas_jax.llm.base import LLM, Generation, Request, SamplingParams, Usage

__all__ = ["LLM", "Generation", "Request", "SamplingParams", "Usage"]
