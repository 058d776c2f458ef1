"""Registered metrics (thin wrappers) over the pure functions in `mibench.metrics.functional`."""
