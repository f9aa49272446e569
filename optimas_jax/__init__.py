"""optimas_jax: Optimas (globally aligned local rewards) for compound AI systems in JAX."""

__version__ = "0.1.0"
