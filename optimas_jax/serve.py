"""``python -m optimas_jax.serve``: the server itself is ``optimas_jax.llm.serve``."""

import sys

from optimas_jax.llm.serve import main

if __name__ == "__main__":
  sys.exit(main())
