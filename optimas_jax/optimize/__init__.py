"""Local optimizers (one per variable type) and component selection."""
