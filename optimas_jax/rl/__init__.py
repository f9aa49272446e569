"""LLM components trained by RL against their local reward (issue 12).

lora (adapters as array pytrees: init, merge / unmerged application,
digests, files) -> objective (teacher-forced token log-probs, clipped
surrogate, k3 KL, GRPO group advantages, GAE) -> config (RLConfig) ->
update (train state, reference pass, the jitted data-parallel update with
gradient accumulation) -> trainer (RLTrainer.step: sample, host reward,
update).

Imports nothing here: ``llm.local`` imports ``rl.lora`` for sampling with
an adapter, and the package's other modules import from further up.
"""
