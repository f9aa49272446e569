"""Local reward functions (issue 4).

config (defaults, validation) -> text (template, middle truncation) -> data
(groups) -> buckets (fixed shapes) -> model (backbone + vmapped heads,
trainable split, LoRA) -> loss (grouped Bradley-Terry) -> cache (frozen
activations) -> train (state, steps, trainer) -> checkpoint -> score
(batched scorer) -> run (the `job == "lrf"` entry point).
"""
