"""Training: small dataclass configs, plain loops, atomic checkpoints."""
