"""A batch's study work: its asks and tells together, and the study's trials counted.

Where the speedups apply (`_speedups`: Optuna's internals, behind a version check and
`HPJAX_SPEEDUPS`), a batch's writes are one database transaction, its asks read the study once
and the database counts its trials; elsewhere Optuna's public API does each (`study.tell`, the
trials loaded and counted).
"""

import dataclasses
import os
from typing import Any, Optional

import optuna
from hydra.core.utils import JobReturn
from optuna.trial import TrialState

from . import _speedups
from ._storage import fresh_trials, storage_of

# Trials that ended with a result (diverged, failed on a bad value) count toward n_trials; a trial
# left RUNNING by a killed sweep does not, and is run again on resume.
FINAL_FAIL = ("diverged", "failed")


transaction = _speedups.transaction  # a batch's writes: one transaction where enabled
asking = _speedups.asking  # a batch's asks: the study read once where enabled


def finish(study: optuna.Study, trial_id: int, state: TrialState,
           values: Optional[list] = None) -> None:
    """`study.tell` of a COMPLETE (finite values, checked by the caller) or FAIL trial (straight
    to the storage where the speedups allow)."""
    if not _speedups.finish(study, trial_id, state, values):
        number = storage_of(study).get_trial_number_from_id(trial_id)
        study.tell(number, values, state=state)


def count(study: optuna.Study) -> tuple[int, int]:
    """(finished, running): trials that count toward n_trials (COMPLETE, PRUNED, or FAIL with a
    final status), and trials RUNNING."""
    counted = _speedups.count(study, FINAL_FAIL)
    if counted is not None:
        return counted
    running = len(fresh_trials(study, (TrialState.RUNNING,)))
    return len(finished_trials(study)), running


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward n_trials, loaded (the grid needs their parameters)."""
    return [t for t in fresh_trials(study, (TrialState.COMPLETE, TrialState.FAIL,
                                            TrialState.PRUNED))
            if t.state != TrialState.FAIL or t.user_attrs.get("status") in FINAL_FAIL]


def best_line(study: optuna.Study, names: list[str]) -> str:
    """The sweep's progress: the best trial so far (one objective, asked of the database) or
    the Pareto front's size."""
    if len(study.directions) > 1:
        front = study.best_trials
        return (f"Pareto front of {', '.join(names)}: {len(front)} trials" if front
                else "no finished trial yet")
    try:
        best = study.best_trial
    except ValueError:
        return "no finished trial yet"
    return f"best {names[0]} {best.value:.4f} (trial {best.number})"


class _SavedHydraConfig(JobReturn):
    """A told job's `JobReturn` whose Hydra config is read back from its `.hydra/hydra.yaml`
    when asked for: a sweep keeps every job's return, and their Hydra configs (most of a job's
    memory) would grow the driver with every trial."""

    @property
    def hydra_cfg(self) -> Any:
        if self._hydra_file is None:
            return self._kept
        from omegaconf import OmegaConf

        return OmegaConf.load(self._hydra_file)

    @hydra_cfg.setter
    def hydra_cfg(self, value: Any) -> None:
        from omegaconf import OmegaConf

        output_dir = OmegaConf.select(value, "hydra.runtime.output_dir") if value else None
        subdir = OmegaConf.select(value, "hydra.output_subdir") if value else None
        path = os.path.join(output_dir, subdir, "hydra.yaml") if output_dir and subdir else ""
        saved = os.path.exists(path)
        self._hydra_file, self._kept = (path, None) if saved else (None, value)


def slim(returns: list) -> list:
    """The batch's returns, each keeping its Hydra config on disk only (where it was saved),
    and no told result (the vmap launcher's light returns carry one)."""
    for ret in returns:
        if getattr(ret, "result", None) is not None:
            ret.result = None
    return [_SavedHydraConfig(**{f.name: getattr(ret, f.name)
                                 for f in dataclasses.fields(JobReturn)})
            if type(ret) is JobReturn else ret for ret in returns]


class Milestones:
    """When a sweep logs its progress: after each of its first `every` batches, then each time
    another 1/`every` of the trials has finished (20 lines for 10,000 trials), and at the end."""

    def __init__(self, every: int = 20) -> None:
        self.every, self.batches, self.logged = every, 0, 0

    def due(self, finished: int, total: int) -> bool:
        self.batches += 1
        step = self.every * finished // max(total, 1)
        if self.batches <= self.every or finished >= total or step > self.logged:
            self.logged = step
            return True
        return False


def bar(finished: int, total: int, width: int = 20) -> str:
    """`|██████░░░░| 60%`: the sweep's progress as a bar."""
    done = min(width, width * finished // max(total, 1))
    return f"|{'█' * done}{'░' * (width - done)}| {100 * finished // max(total, 1)}%"


__all__ = ["Milestones", "asking", "bar", "slim", "best_line", "count", "finish", "finished_trials",
           "transaction"]
