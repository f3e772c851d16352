"""Multi-fidelity schedules: Hyperband's brackets and successive halving's rungs, in epochs.

Pure Python (no JAX): the sweeper plans brackets with `hyperband`/`successive_halving`, and
`SuccessiveHalving`, a `hpjax.engine.schedulers.base.Scheduler`, applies the rule of Li et al.
(JMLR 2018, Algorithm 1) to a bracket: at each rung's epoch it keeps the top floor(m / eta) of
the m trials still in the bracket, once all m have reached the rung.
"""

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from hpjax.engine.schedulers.base import (
    CONTINUE,
    PAUSE,
    Decision,
    FullTraining,
    Stop,
    TrialResult,
    pairs,
    rank_key,
    unpairs,
)

log = logging.getLogger("hpjax")


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


@dataclass
class SuccessiveHalving(FullTraining):
    """A bracket's rule over all its trials, whatever population, chunk or static signature
    each trains in: at each rung's epoch (the last excepted) a trial waits (`PAUSE`) until every
    trial of the rung has reached it, or ended before it; then the top floor(m / eta) of the
    rung's m trials go on and the others stop. A trial without a score (it diverged) ranks last;
    one that ended before the rung (stopped early) ranks by its best score and, promoted, takes
    its place without training further, as in Li et al.'s Algorithm 1."""

    rung_epochs: Sequence[int]
    eta: int
    mode: str
    label: str = ""  # how the log names the bracket
    on_rung: Any = None  # called with (rung index, epoch, trials, promoted) as a rung decides
    trials: list = field(default_factory=list)  # the bracket's trials, in order of adding
    reports: dict = field(default_factory=dict)  # rung -> {trial: score}
    ended: dict = field(default_factory=dict)  # trial -> its score when it ended
    waiting: dict = field(default_factory=dict)  # trial -> the rung it waits at
    decided: dict = field(default_factory=dict)  # rung -> the trials it promoted
    promoted: list = field(default_factory=list)  # (epoch, trials in the rung, promoted)

    def on_trial_add(self, trial: Hashable) -> None:
        if trial not in self.trials:
            self.trials.append(trial)

    def on_trial_result(self, trial: Hashable, result: TrialResult) -> Decision:
        if result.epoch not in self.rung_epochs[:-1] or result.last:
            return CONTINUE
        rung = list(self.rung_epochs).index(result.epoch)
        self.reports.setdefault(rung, {})[trial] = result.score
        self.waiting[trial] = rung
        return self.decide(trial)

    def decide(self, trial: Hashable) -> Decision:
        rung = self.waiting.get(trial)
        if rung is None:
            return CONTINUE
        if rung not in self.decided and not self._decide(rung):
            return PAUSE
        del self.waiting[trial]
        if trial in self.decided[rung]:
            return CONTINUE
        epoch = self.rung_epochs[rung]
        return Stop(f"rung {rung + 1} (epoch {epoch}): not among the "
                    f"{len(self.decided[rung])} best of {len(self._expected(rung))}")

    def on_trial_complete(self, trial: Hashable, result: Optional[TrialResult]) -> None:
        self.ended[trial] = None if result is None else result.score
        self.waiting.pop(trial, None)

    def _expected(self, rung: int) -> list:
        return list(self.trials) if rung == 0 else [
            t for t in self.trials if t in self.decided.get(rung - 1, ())]

    def _decide(self, rung: int) -> bool:
        """Promotes the rung's best once every trial of it reported or ended."""
        expected, reported = self._expected(rung), self.reports.get(rung, {})
        if rung > 0 and rung - 1 not in self.decided:
            return False
        if any(t not in reported and t not in self.ended for t in expected):
            return False
        score = {t: reported[t] if t in reported else self.ended[t] for t in expected}
        ranked = sorted(expected, key=lambda t: rank_key(score[t], self.mode))
        keep = len(expected) // self.eta
        self.decided[rung] = set(ranked[:keep])
        epoch = self.rung_epochs[rung]
        self.promoted.append((epoch, len(expected), keep))
        log.info("%s rung %d (epoch %d): %d trials, %d promoted", self.label, rung + 1, epoch,
                 len(expected), keep)
        if self.on_rung is not None:
            self.on_rung(rung, epoch, len(expected), keep)
        return True

    def table(self) -> str:
        """The rungs as they ran: `4x1 2x2 1x4` (trials x epochs), as far as they got."""
        if not self.promoted:
            return ""
        return " ".join([f"{n}x{e}" for e, n, _ in self.promoted]
                        + [f"{self.promoted[-1][2]}x{self.rung_epochs[-1]}"])

    def save(self) -> dict:
        return {"reports": {str(r): pairs(v) for r, v in self.reports.items()},
                "ended": pairs(self.ended), "waiting": pairs(self.waiting),
                "decided": {str(r): sorted(v, key=repr) for r, v in self.decided.items()},
                "promoted": self.promoted}

    def restore(self, state: dict) -> None:
        """Merges a checkpoint's state (each population saves the bracket's state it knew)."""
        for r, items in state.get("reports", {}).items():
            self.reports.setdefault(int(r), {}).update(unpairs(items))
        self.ended.update(unpairs(state.get("ended")))
        self.waiting.update(unpairs(state.get("waiting")))
        for r, trials in state.get("decided", {}).items():
            if int(r) not in self.decided:
                self.decided[int(r)] = {tuple(t) if isinstance(t, list) else t for t in trials}
        for p in state.get("promoted", ()):
            if tuple(p) not in self.promoted:
                self.promoted.append(tuple(p))


__all__ = ["Rung", "SuccessiveHalving", "bracket", "check", "hyperband", "s_max",
           "successive_halving", "table"]
