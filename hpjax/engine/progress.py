"""What a population reports after each epoch, and the live display of a sweep's populations.

The compiled program runs a whole epoch (a `lax.scan` over its steps) before the host sees any
number, so progress costs one transfer per epoch, the one early stopping needs anyway.
"""

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

log = logging.getLogger("hpjax")


@dataclass(frozen=True)
class EpochReport:
    """A population after one epoch."""

    epoch: int
    epochs: int
    running: int  # members still training (not stopped early, not diverged)
    members: int
    metric: str  # the objective's metric
    best: Optional[float]  # its best value so far among members that have not diverged
    best_member: Optional[int]  # the index of that member


def _best(report: EpochReport, names: Optional[list]) -> str:
    if report.best is None:
        return "best -"
    who = names[report.best_member] if names else f"member {report.best_member}"
    return f"best {report.metric} {report.best:.4f} ({who})"


def log_report(report: EpochReport, names: Optional[list] = None) -> None:
    """The plain rendering: one log line per epoch."""
    log.info("epoch %3d/%d  %d/%d members running  %s", report.epoch, report.epochs,
             report.running, report.members, _best(report, names))


class SweepProgress:
    """A live display with one bar per population (epoch, members still running, best member
    so far) on a terminal; elsewhere (a log file, CI) one log line per epoch instead."""

    def __init__(self, console: Any = None, live: Optional[bool] = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self._progress: Any = None
        self._stdout, self._stderr = sys.stdout, sys.stderr

    @contextmanager
    def running(self) -> Iterator["SweepProgress"]:
        if not self.live:
            yield self
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=10),
            TextColumn("epoch {task.completed:>3.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[running]}"), TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(), console=self.console)
        try:
            with self._progress:
                # Log lines go above the display: rich now stands in for stdout and stderr.
                handlers = [h for h in logging.root.handlers + log.handlers
                            if type(h) is logging.StreamHandler]
                streams = [h.setStream({id(self._stdout): sys.stdout, id(self._stderr):
                                        sys.stderr}.get(id(h.stream), h.stream))
                           for h in handlers]
                try:
                    yield self
                finally:
                    for h, stream in zip(handlers, streams, strict=True):
                        h.setStream(stream)
        finally:
            self._progress = None

    def population(self, label: str, epochs: int,
                   names: Optional[list] = None) -> Callable[[EpochReport], None]:
        """The `on_progress` callback of one population; `names[i]` names member i."""
        if self._progress is None:
            return lambda report: log_report(report, names)
        task = self._progress.add_task(label, total=epochs, running="", best="")

        def update(report: EpochReport) -> None:
            self._progress.update(
                task, completed=report.epoch if report.running else epochs,
                running=f"{report.running}/{report.members} running", best=_best(report, names))

        return update
