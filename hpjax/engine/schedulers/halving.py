"""Multi-fidelity schedules: Hyperband's brackets and successive halving's rungs, in epochs.

Pure Python (no JAX): the sweeper plans brackets with `hyperband`/`successive_halving`, and the
host loop calls a `Stopper` after every epoch, which says which trials of the population stop
there (`pruned`). `SuccessiveHalving` is the rule of Li et al. (JMLR 2018, Algorithm 1): at each
rung's epoch it keeps the top floor(m / eta) of the m trials still in the bracket.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol


@dataclass(frozen=True)
class Rung:
    """`n` configurations trained to `epochs` epochs."""

    n: int
    epochs: int


def check(eta: int, min_epochs: int, max_epochs: int) -> None:
    """Rejects a bad eta, min_epochs or train.epochs, naming the key and the fix."""
    if eta < 2:
        raise ValueError(f"hydra.sweeper.eta={eta}: must be an integer >= 2 (the fraction "
                         "1/eta of a rung's trials go on to the next rung; 3 is usual)")
    if min_epochs < 1:
        raise ValueError(f"hydra.sweeper.min_epochs={min_epochs}: must be >= 1")
    if min_epochs > max_epochs:
        raise ValueError(f"hydra.sweeper.min_epochs={min_epochs} is more than train.epochs="
                         f"{max_epochs} (the maximum resource R): lower min_epochs or raise "
                         "train.epochs")


def s_max(max_epochs: int, eta: int, min_epochs: int = 1) -> int:
    """floor(log_eta(R / min_epochs)), in integers (no float rounding at exact powers)."""
    s, ratio = 0, max_epochs / min_epochs
    while eta ** (s + 1) <= ratio:
        s += 1
    return s


def bracket(n: int, s: int, max_epochs: int, eta: int) -> list[Rung]:
    """Successive halving from `n` configurations at R eta^-s epochs: rung i has floor(n eta^-i)
    configurations at R eta^(i-s) epochs (rounded to whole epochs)."""
    return [Rung(n // eta ** i, max(1, round(max_epochs * eta ** (i - s))))
            for i in range(s + 1)]


def hyperband(max_epochs: int, eta: int = 3, min_epochs: int = 1) -> list[list[Rung]]:
    """Hyperband's brackets s = s_max ... 0 (Li et al. 2018): B = (s_max + 1) R, and bracket s
    starts n = ceil(B / R * eta^s / (s + 1)) configurations at r = R eta^-s epochs."""
    check(eta, min_epochs, max_epochs)
    top = s_max(max_epochs, eta, min_epochs)
    return [bracket(-(-(top + 1) * eta ** s // (s + 1)), s, max_epochs, eta)
            for s in range(top, -1, -1)]


def successive_halving(max_epochs: int, eta: int = 3, min_epochs: int = 1,
                       n: Optional[int] = None) -> list[Rung]:
    """One bracket from `min_epochs` (Hyperband's most exploratory, s = s_max); `n`
    configurations (default: that bracket's, eta^s_max)."""
    check(eta, min_epochs, max_epochs)
    top = s_max(max_epochs, eta, min_epochs)
    return bracket(eta ** top if n is None else n, top, max_epochs, eta)


def table(brackets: Sequence[Sequence[Rung]]) -> list[str]:
    """Each bracket as `81x1 27x3 9x9 3x27 1x81` (configurations x epochs)."""
    return [" ".join(f"{r.n}x{r.epochs}" for r in b) for b in brackets]


class Stopper(Protocol):
    """What the host loop asks after every epoch of a population: which trials stop here.

    `scores[i]`: trial i's objective so far (its best epoch's), None when it has none (it
    diverged); `values[i]`: its objective at this epoch; `running[i]`: whether it still trains;
    `epochs[i]`: its own epoch (in a refilled population, trials joined at different epochs).
    Returns the indices of the trials to prune."""

    def __call__(self, epoch: int, scores: list[Optional[float]], values: list[Optional[float]],
                 running: list[bool], epochs: Optional[list[int]] = None) -> set[int]: ...


@dataclass
class SuccessiveHalving:
    """A bracket's rule in one population: at each rung's epoch (the last excepted) the top
    floor(m / eta) of its m trials still in the bracket go on; a trial without a score (it
    diverged) ranks last."""

    rung_epochs: Sequence[int]
    eta: int
    mode: str
    out: set = field(default_factory=set)  # trials pruned so far
    promoted: list = field(default_factory=list)  # (epoch, trials in the rung, promoted)

    def __call__(self, epoch: int, scores: list[Optional[float]], values: list[Optional[float]],
                 running: list[bool], epochs: Optional[list[int]] = None) -> set[int]:
        if epoch not in self.rung_epochs[:-1]:
            return set()
        alive = [i for i in range(len(scores)) if i not in self.out]
        ranked = sorted(alive, key=lambda i: _rank_key(scores[i], self.mode))
        keep = len(alive) // self.eta
        pruned = set(ranked[keep:])
        self.out |= pruned
        self.promoted.append((epoch, len(alive), keep))
        return pruned

    def table(self) -> str:
        """The rungs as they ran: `4x1 2x2 1x4` (trials x epochs), as far as they got."""
        if not self.promoted:
            return ""
        return " ".join([f"{n}x{e}" for e, n, _ in self.promoted]
                        + [f"{self.promoted[-1][2]}x{self.rung_epochs[-1]}"])

    def resume(self, out: set[int]) -> None:
        """Continues a bracket from a checkpoint: the trials it had stopped are `out`."""
        self.out = set(out)


@dataclass(frozen=True)
class HalvingStoppers:
    """A bracket's stoppers as a launcher takes them (batch positions -> `Stopper`), without
    Optuna: picklable, for a population trained in a SLURM job."""

    rung_epochs: tuple
    eta: int
    mode: str

    def __call__(self, ids: list[int]) -> SuccessiveHalving:
        return SuccessiveHalving(list(self.rung_epochs), self.eta, self.mode)


@dataclass(frozen=True)
class SameStopper:
    """One object for every population of a batch (PBT's explorer): picklable."""

    stopper: object

    def __call__(self, ids: list[int]) -> object:
        return self.stopper


def _rank_key(score: Optional[float], mode: str) -> tuple:
    if score is None or not math.isfinite(score):
        return (1, 0.0)
    return (0, -score if mode == "max" else score)


__all__ = ["HalvingStoppers", "Rung", "SameStopper", "Stopper", "SuccessiveHalving", "bracket",
           "check", "hyperband", "s_max", "successive_halving", "table"]
