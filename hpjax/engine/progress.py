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
    so far) on a terminal; elsewhere (piped, a SLURM log, CI) one log line per epoch in
    `log_file` (the sweep's `populations.log`; without one, at DEBUG) and one line on the
    terminal as each population ends."""

    def __init__(self, console: Any = None, live: Optional[bool] = None,
                 log_file: Optional[str] = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.log_file = log_file
        self._progress: Any = None
        self._file: Optional[logging.Handler] = None
        self._terminal: Optional[logging.Handler] = None
        self._stdout, self._stderr = sys.stdout, sys.stderr

    @contextmanager
    def running(self) -> Iterator["SweepProgress"]:
        if not self.live:
            with self._epochs_file():
                yield self
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        # markup=False: a label, a metric name or a trial's name is shown as written ([...])
        self._progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(bar_width=10),
            TextColumn("epoch {task.completed:>3.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[running]}", markup=False),
            TextColumn("{task.fields[best]}", markup=False), TimeElapsedColumn(),
            console=self.console)
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

    @contextmanager
    def _epochs_file(self) -> Iterator[None]:
        # The terminal's handler as the sweep's logging set it up: a launcher sets up each job's
        # logging as it ends (its own file; its INFO lines kept off the terminal) while later
        # populations train, and a population's end belongs to neither.
        shown = [h for h in logging.root.handlers if type(h) is logging.StreamHandler]
        if shown and self._terminal is None:
            self._terminal = logging.StreamHandler(shown[0].stream)
            self._terminal.setFormatter(shown[0].formatter)
        if self.log_file is None or self._file is not None:
            yield
            return
        import os

        os.makedirs(os.path.dirname(os.path.abspath(self.log_file)), exist_ok=True)
        # A handler of its own, not a logger's: the lines reach that file and no terminal.
        self._file = logging.FileHandler(self.log_file, delay=True)
        self._file.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
        try:
            yield
        finally:
            self._file.close()
            self._file = None

    def population(self, label: str, epochs: int, names: Optional[list] = None,
                   quiet: bool = False) -> Callable[[EpochReport], None]:
        """The `on_progress` callback of one population; `names[i]` names member i. `quiet`:
        without a live display, its end is not shown on the terminal (its epochs still go to
        the log file): a batch like the one before it."""
        if self._progress is None:
            return self._plain(label, names, quiet)
        task = self._progress.add_task(label, total=epochs, running="", best="")

        def update(report: EpochReport) -> None:
            self._progress.update(
                task, completed=report.epoch if report.running else epochs,
                running=f"{report.running}/{report.members} running", best=_best(report, names))

        return update

    def _plain(self, label: str, names: Optional[list],
               quiet: bool = False) -> Callable[[EpochReport], None]:
        """Without a live display: the epochs to the log file, the end to the terminal."""
        ended = []

        def update(report: EpochReport) -> None:
            if self._file is not None:
                self._file.handle(logging.LogRecord(
                    "hpjax.epochs", logging.INFO, __file__, 0,
                    "%s: epoch %3d/%d  %d/%d members running  %s", (
                        label, report.epoch, report.epochs, report.running, report.members,
                        _best(report, names)), None))
            else:
                log.debug("%s: epoch %d/%d  %d/%d members running  %s", label, report.epoch,
                          report.epochs, report.running, report.members, _best(report, names))
            if not ended and (report.epoch >= report.epochs or not report.running):
                ended.append(report)
                line = ("%s: done after epoch %d, %s", (label, report.epoch,
                                                         _best(report, names)))
                if quiet:
                    log.debug(line[0], *line[1])
                elif self._terminal is not None:
                    self._terminal.handle(logging.LogRecord(
                        log.name, logging.INFO, __file__, 0, *line, None))
                else:
                    log.info(line[0], *line[1])

        return update
