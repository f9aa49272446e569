"""The paper's peers and DSPy interop, through the real packages (the `peers` extra).

  env           offline settings, `require` (a clear error naming the pip command),
                `LoopbackOnly` (refuses connections outside loopback)
  served        the local model behind optimas_jax.serve, as DSPy / GEPA / TextGrad clients
  dspy_adapter  a DSPy adapter that formats and parses like our components (+ parse counts)
  dspy_program  Optimas for an existing DSPy program: dspy.Module -> System -> DSPy save file
  baselines     MIPROv2 (instructions only / full), GEPA and TextGrad on a task, at a budget

Nothing here is imported by the rest of the package unless a peer method is
chosen, so the core installs and runs without these packages.
"""
