"""Training steps both worlds share: the epoch loop with resume, and fine-tuning a pretrained network."""
