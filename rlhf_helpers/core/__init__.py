"""What every stage shares: the training loop, checkpoints, run cards, precision, padding and masks."""
