"""The paper's peers as Methods, through the real packages (the `peers` extra).

  program       the peers' shared view of a task: prompt texts in, counted runs out
  settings      each peer's knobs (config.peers), checked at start-up
  method        a peer search as a Method: served LLM on loopback, Outcome out
  mipro         DSPy MIPROv2 (instructions only / instructions and demos)
  gepa          GEPA over the System's prompts
  textgrad      TextGrad's textual gradient descent, with validation and revert
  env           offline settings, `require` (a clear error naming the pip command),
                `LoopbackOnly` (refuses connections outside loopback)
  served        the local model behind optimas_jax.serve, as DSPy / GEPA / TextGrad clients
  dspy_adapter  a DSPy adapter that formats and parses like our components (+ parse counts)

The DSPy packages are imported only when a peer runs, so the core installs
and runs without them. DSPy interop (a dspy.Module as a System) is
optimas_jax/adapt/dspy.py.
"""
