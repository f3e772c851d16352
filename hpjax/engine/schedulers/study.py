"""An Optuna study as a scheduler: each trial's epochs reported to its Optuna trial (the learning
curves in the study), its pruner asked (ASHA, the median rule, Hyperband, any `BasePruner`), a
rule's decisions passed on (a bracket's successive halving), new trials asked of the study for
free slots (refill). Optuna is never imported here: the trials are the caller's."""

from collections.abc import Callable, Hashable
from typing import Any, Optional

from hpjax.engine.schedulers.base import (
    Continue,
    Decision,
    FullTraining,
    Scheduler,
    Stop,
    TrialResult,
)


class StudyTrials(FullTraining):
    """`trials`: trial id -> its `optuna.Trial` (grows as `ask` adds trials); `rule`: the
    decisions besides the pruner's (default: train to the end); `prune`: ask the study's pruner
    after every epoch but the last; `ask(n)`: at most n new (trial id, payload) for free slots,
    fewer once the study has all it needs (None: no refills); `pruner`: how a `Stop`'s reason
    names the pruner."""

    def __init__(self, trials: dict, rule: Optional[Scheduler] = None, prune: bool = False,
                 ask: Optional[Callable[[int], list]] = None,
                 pruner: str = "the study's pruner") -> None:
        self.trials, self.rule, self.prune, self.ask = trials, rule or FullTraining(), prune, ask
        self.pruner = pruner
        self.explores = self.rule.explores
        self.refills = ask is not None

    def on_trial_add(self, trial: Hashable) -> None:
        self.rule.on_trial_add(trial)

    def on_trial_result(self, trial: Hashable, result: TrialResult) -> Decision:
        study_trial: Any = self.trials.get(trial)
        if study_trial is not None and result.value is not None:
            study_trial.report(result.value, result.epoch)
        decision = self.rule.on_trial_result(trial, result)
        if (self.prune and isinstance(decision, Continue) and not result.last
                and study_trial is not None and result.value is not None
                and study_trial.should_prune()):
            return Stop(f"{self.pruner} at epoch {result.epoch}")
        return decision

    def decide(self, trial: Hashable) -> Decision:
        return self.rule.decide(trial)

    def on_trial_complete(self, trial: Hashable, result: Optional[TrialResult]) -> None:
        self.rule.on_trial_complete(trial, result)

    def refill(self, free: int) -> list:
        return self.ask(free) if self.ask is not None else []

    def save(self) -> dict:
        return self.rule.save()

    def restore(self, state: dict) -> None:
        self.rule.restore(state)


__all__ = ["StudyTrials"]
