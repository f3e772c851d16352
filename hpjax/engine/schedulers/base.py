"""The Scheduler protocol: what the epoch loop asks about each trial, and the decisions it obeys.

After every epoch the loop reports each trial that trained (`on_trial_result`, a `TrialResult`)
and the scheduler answers with a decision: `CONTINUE`, `PAUSE` (wait at this epoch boundary
until the scheduler has heard from other trials: a rung of successive halving, PBT's ranking),
`Stop(reason)` (pruned), or `Exploit(donor, values)` (copy the donor trial's state, then train
with new values of traced hyperparameters: PBT). A paused trial's decision is asked again with
`decide` whenever the loop comes back to it; a population trains on only once none of its trials
waits, and the loop trains the batch's other populations meanwhile. A trial that ends
(`train.epochs` reached, diverged, stopped early) is told with `on_trial_complete`. A scheduler
that `refills` gives new trials for free slots (`refill`). Its state goes into every checkpoint
(`save`) and comes back when a population continues from one (`restore`).

Modelled on Ray Tune's `TrialScheduler` (`on_trial_add`, `on_trial_result -> CONTINUE | PAUSE |
STOP`, `on_trial_complete`, `save`/`restore`). Trials are named by hashable ids the caller
chooses (job numbers in a sweep), so one scheduler can see trials of several populations, chunks
and static signatures at once.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union, runtime_checkable


@dataclass(frozen=True)
class Continue:
    """Train on."""


@dataclass(frozen=True)
class Pause:
    """Wait at this epoch boundary; `Scheduler.decide` is asked again later."""


@dataclass(frozen=True)
class Stop:
    """Stop here: the trial ends `pruned`, keeping its best epoch so far."""

    reason: str


@dataclass(frozen=True)
class Exploit:
    """Copy trial `donor` (parameters, optimizer state, PRNG keys, best-epoch tracker, config)
    and train on with `values` (dotted keys of traced numbers: `{"optimizer.lr": 0.01}`)."""

    donor: Hashable
    values: dict


CONTINUE, PAUSE = Continue(), Pause()
Decision = Union[Continue, Pause, Stop, Exploit]


@dataclass(frozen=True)
class TrialResult:
    """One trial's epoch, as the loop reports it (a trial of several seeds or folds: their
    mean). `value`: the objective at this epoch; `score`: at its best epoch so far (None when
    it diverged); `last`: it reached `train.epochs`, and ends whatever the answer; `values`: its
    current values of the scheduler's `explores` keys."""

    epoch: int
    value: Optional[float]
    score: Optional[float]
    last: bool = False
    values: dict = field(default_factory=dict)


@runtime_checkable
class Scheduler(Protocol):
    """Decides, epoch by epoch, which trials go on (see the module's docstring).

    `explores`: the keys an `Exploit` may change, whose schedule each trial records (PBT);
    `refills`: whether `refill` gives new trials for the slots of trials that ended."""

    explores: Sequence[str]
    refills: bool

    def on_trial_add(self, trial: Hashable) -> None: ...

    def on_trial_result(self, trial: Hashable, result: TrialResult) -> Decision: ...

    def decide(self, trial: Hashable) -> Decision: ...

    def on_trial_complete(self, trial: Hashable, result: Optional[TrialResult]) -> None: ...

    def refill(self, free: int) -> list: ...

    def save(self) -> dict: ...

    def restore(self, state: dict) -> None: ...


class FullTraining:
    """Every trial trains to its `train.epochs` (or until it stops early or diverges): the
    scheduler of a plain run. Subclass it to write a scheduler that overrides what it needs."""

    explores: Sequence[str] = ()
    refills = False

    def on_trial_add(self, trial: Hashable) -> None:
        pass

    def on_trial_result(self, trial: Hashable, result: TrialResult) -> Decision:
        return CONTINUE

    def decide(self, trial: Hashable) -> Decision:
        return CONTINUE

    def on_trial_complete(self, trial: Hashable, result: Optional[TrialResult]) -> None:
        pass

    def refill(self, free: int) -> list:
        return []

    def save(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


def rank_key(score: Optional[float], mode: str) -> tuple:
    """Sorts best first; a trial without a finite score last."""
    import math

    if score is None or not math.isfinite(score):
        return (1, 0.0)
    return (0, -score if mode == "max" else score)


def pairs(mapping: dict) -> list:
    """A dict with any hashable keys as a JSON-able list of [key, value] (checkpoint meta)."""
    return [[k, v] for k, v in mapping.items()]


def unpairs(items: Any) -> dict:
    return {(tuple(k) if isinstance(k, list) else k): v for k, v in items or ()}


__all__ = ["CONTINUE", "PAUSE", "Continue", "Decision", "Exploit", "FullTraining", "Pause",
           "Scheduler", "Stop", "TrialResult", "pairs", "rank_key", "unpairs"]
