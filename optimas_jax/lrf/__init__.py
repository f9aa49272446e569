"""Local reward functions (issue 4).

config (defaults, validation) -> text (template, truncation) -> data
(groups) -> buckets (fixed shapes) -> model (backbone + vmapped heads,
trainable split, LoRA) -> loss (grouped Bradley-Terry) -> cache (frozen
activations) -> train (state, steps, update masks, `Trainer.fit`) -> score
(batched scorer) -> rewards (the loop's per-component LRF) and run (the
`job == "lrf"` entry point; checkpoints through optimas_jax.checkpoint).
"""
