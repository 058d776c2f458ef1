"""Registered defenses, one file each, plugging into the shared training loop of `mibench.training.classifier`."""
