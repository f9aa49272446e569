"""Interop with other frameworks' programs (the reference's optimas/adapt/).

  dspy  a dspy.Module -> an optimas_jax System -> Optimas -> back into the
        program and DSPy's save file (needs the `peers` extra)
"""
