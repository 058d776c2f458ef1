"""What a method gets from the runner: device, seeds and progress. Methods never pick devices or seeds themselves."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mibench.hashing import derive_seed
from mibench.progress import SILENT, Reporter


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


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_device(device: torch.device) -> None:
    """Throughput settings on CUDA: TF32 matmuls and convolutions, cuDNN autotuning for fixed shapes.

    Results then differ from float32 in the last bits, as any GPU run's do; nothing changes on CPU.
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's and Python's global generators."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
