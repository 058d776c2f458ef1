"""Progress bars with ETA on stderr for long stages; plain job lines when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Where mibench tells the user what it is doing.

    Args:
        bars: Show live bars; default: only when stderr is a terminal (CI logs stay clean).
        quiet: Suppress job lines too.
    """

    def __init__(self, *, bars: bool | None = None, quiet: bool = False):
        self.console = Console(stderr=True, highlight=False)
        self.bars = self.console.is_terminal if bars is None else bars
        self.quiet = quiet

    def log(self, message: str) -> None:
        """One line on stderr."""
        if not self.quiet:
            self.console.print(message, markup=False)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar; yields `advance(n)`. A no-op without a terminal."""
        if not self.bars or self.quiet or total <= 0:
            yield lambda n=1: None
            return
        progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)


SILENT = Reporter(bars=False, quiet=True)


def stderr_is_terminal() -> bool:
    """Whether stderr is attached to a terminal."""
    return sys.stderr.isatty()
