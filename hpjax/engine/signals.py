"""SIGINT and SIGTERM as events: a sweep stops at the next epoch boundary instead of dying mid-step.

Inside `deferred()`, the first SIGINT or SIGTERM is only recorded; the training loop asks
`requested()` at each epoch boundary, saves the checkpoints of members with
`train.checkpoint_every`, and raises `Interrupted`, which the sweeper turns into failed
(`interrupted`) trials, a summary and exit code 128 + the signal. A second signal raises at once.
Outside `deferred()` (or off the main thread) nothing changes. Under Hydra's own sweepers the
vmap launcher enters `deferred()` itself (`hydra_plugins/hpjax_launcher/_interrupt.py`); inside
hpjax's sweeper, which entered it first, it leaves the signal to the sweeper (`active()`).
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: Optional[int] = None
_depth = 0  # nested deferred() blocks: the outermost one owns the handlers


class Interrupted(KeyboardInterrupt):
    """A sweep stopped by a signal at an epoch boundary."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> Optional[int]:
    """The signal received inside `deferred()`, if any."""
    return _requested


def _record(signum: int, frame: object) -> None:
    global _requested
    if _requested is not None:  # a second signal: stop now
        raise Interrupted(signum)
    _requested = signum


def active() -> bool:
    """Whether a `deferred()` block is handling SIGINT/SIGTERM now."""
    return _depth > 0


@contextmanager
def deferred(signums: tuple = SIGNALS) -> Iterator[None]:
    """Records SIGINT/SIGTERM (or `signums`: a SLURM job's pre-timeout USR2) instead of raising,
    until the loop reaches an epoch boundary. A block inside another changes nothing: the outer
    one keeps its handlers and its signal."""
    global _requested, _depth
    if threading.current_thread() is not threading.main_thread() or _depth:
        yield
        return
    saved = {s: signal.signal(s, _record) for s in signums}
    _requested, _depth = None, 1
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        _requested, _depth = None, 0


def check() -> None:
    """Raises `Interrupted` when a signal arrived (called at epoch boundaries)."""
    if _requested is not None:
        raise Interrupted(_requested)


__all__ = ["Interrupted", "active", "check", "deferred", "requested"]
