"""A test-only metric that holds its job at a known point: it writes `<folder>/held`, then waits for
`<folder>/release`. Tests that signal a run import this module in the run's process (`python -c "import
tests.holding; ..."`), wait for `held` and only then send the signal, so the outcome never depends on how fast the
machine finished the jobs before it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.params import Params
from mibench.registry import METRICS


class HoldParams(Params):
    """Where the hand-shake files live, and how long to wait at most (a test that forgets to release still ends)."""

    folder: str
    limit_s: float = 300.0


@METRICS.register
class HoldUntilReleased(Metric):
    """Writes `held`, waits for `release`, measures nothing of the target (value 1)."""

    name: ClassVar[str] = "test-hold"
    paper: ClassVar[str] = "test fixture"
    Params = HoldParams
    scope: ClassVar[str] = "target"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Block until the test releases the job."""
        folder = Path(self.params.folder)
        (folder / "held").touch()
        deadline = time.monotonic() + self.params.limit_s
        while not (folder / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{folder / 'release'} never appeared")
            time.sleep(0.05)
        return [Measurement("held", 1.0, None, "count")]
