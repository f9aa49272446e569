"""LLM components trained by RL against their local reward (issue 12).

models.lora (adapters as array pytrees: init, merge / unmerged
application, digests, files; a model-level module, since sampling and
serving use it too) -> objective (teacher-forced token log-probs, clipped
surrogate, k3 KL, GRPO group advantages, GAE) -> config (RLConfig) ->
update (train state, reference pass, the jitted data-parallel update with
gradient accumulation) -> trainer (RLTrainer.step: sample, host reward,
update).

Imports nothing here: the package's modules import from further up.
"""
