"""A batch's asks and tells as a few statements instead of a dozen a trial, where the speedups
apply (`_speedups`: Optuna's ORM rows written in bulk); elsewhere the sweeper asks and tells
through Optuna's API (`_impl.HpjaxSweeperImpl._ask`, `_tell_batch`)."""

import contextlib
import dataclasses
import io
import math
from typing import Optional

import optuna
from hydra.core.utils import JobReturn
from optuna.trial import TrialState

from . import _attrs, _batch, _speedups
from ._storage import storage_of

applies = _speedups.bulk_applies
ask = _speedups.bulk_ask
tells_in_bulk = _speedups.tells_in_bulk
tell = _speedups.bulk_tell
PRUNED = TrialState.PRUNED


@dataclasses.dataclass
class Outcome:
    """What a batch tells of one trial: its final state and values, its objective per epoch
    (steps already stored, by a pruner's live reports, are kept) and user attributes."""

    trial_id: int
    state: TrialState
    values: Optional[list[float]] = None
    intermediate: dict = dataclasses.field(default_factory=dict)
    user_attrs: dict = dataclasses.field(default_factory=dict)


def final(study: optuna.Study, trial_id: int, status: str, values: list,
          user_attrs: dict) -> Outcome:
    """A trial is COMPLETE with finite values, PRUNED when a bracket or pruner stopped it
    (Optuna takes its last reported value); else FAIL, its `status` saying why."""
    if status == "pruned":
        return Outcome(trial_id, PRUNED, user_attrs={**user_attrs, "status": "pruned"})
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    if status == "ok" and finite and len(values) == len(study.directions):
        return Outcome(trial_id, TrialState.COMPLETE, [float(v) for v in values],
                       user_attrs={**user_attrs, "status": "ok"})
    user_attrs = {**user_attrs, "status": status if status != "ok" else "failed"}
    if status == "ok":
        user_attrs["error"] = f"objective values {values} are not finite numbers"
    return Outcome(trial_id, TrialState.FAIL, user_attrs=user_attrs)


def job_error(ret: JobReturn) -> BaseException:
    """A failed job's exception, as Hydra's `JobReturn.return_value` raises it (its line on
    stderr left out: the sweeper logs the trial's failure in one line of its own)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            _ = ret.return_value  # raises the job's exception
    except BaseException as e:  # noqa: BLE001  (the job's, whatever it was)
        return e
    return RuntimeError(f"the job ended {ret.status.name}")


def apply(study: optuna.Study, outcome: Outcome) -> None:
    """Tells one outcome through the storage (one transaction of a database's writes)."""
    storage, trial_id = storage_of(study), outcome.trial_id
    _attrs.write(study, trial_id, outcome.intermediate, outcome.user_attrs)
    if outcome.state == PRUNED:
        study.tell(storage.get_trial_number_from_id(trial_id), state=PRUNED)
    else:
        _batch.finish(study, trial_id, outcome.state, outcome.values)
