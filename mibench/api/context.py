"""What a method gets from the runner: device, seeds and progress. Methods never pick devices or seeds themselves."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mibench.api.progress import SILENT, Reporter
from mibench.hashing import derive_seed


@dataclass(frozen=True)
class RunContext:
    """Device, the job's seed and the progress reporter.

    Randomness must come from `generator(...)` (or from torch's global RNG, which the runner seeds with `seed` before
    a job starts), so a job's output depends only on its key.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    reporter: Reporter = SILENT

    def generator(self, *parts: Any, device: torch.device | str | None = "cpu") -> torch.Generator:
        """A generator seeded from the job seed and `parts` (e.g. "latents", class, restart)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(derive_seed(self.seed, *parts))
        return gen

    def child(self, *parts: Any) -> RunContext:
        """A context whose seed is derived from this one's and `parts`."""
        return replace(self, seed=derive_seed(self.seed, *parts))
