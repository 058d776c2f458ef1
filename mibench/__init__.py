"""mibench: a benchmark harness for defenses against model-inversion attacks.

The core package holds the machinery (registries, suite schema, planner, runner, artifact store, records, reports).
Methods live in `mibench.defenses`, `mibench.attacks` and `mibench.metrics`, one file each, and register themselves
with the registries in `mibench.registry` when imported.
"""

__version__ = "0.1.0"

# Bumped whenever a change invalidates every cached artifact (layout or semantics of what a job stores).
CACHE_VERSION = 1
