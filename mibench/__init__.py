"""mibench: a benchmark harness for defenses against model-inversion attacks.

The packages by role, top to bottom (each may import only those below it; `lint-imports` checks it): `cli`,
`reporting`, `running`, `suite`, the methods (`attacks`, `defenses`, `metrics`, one file each, registered when
imported), `gan`, the machinery (`inversion`, `training`), `api` (the interfaces a method author implements, all
importable from `mibench.api`), `models`, `data`, and the base modules (`registry`, `params`, `checkpoints`,
`hashing`, `fileio`, `errors`).
"""

__version__ = "0.1.0"

# Bumped whenever a change invalidates every cached artifact (layout or semantics of what a job stores).
CACHE_VERSION = 1
