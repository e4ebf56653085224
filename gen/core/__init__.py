"""The core every family shares: config, data, training loop, checkpoints, logging."""
