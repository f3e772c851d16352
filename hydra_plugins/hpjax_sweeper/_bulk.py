"""A batch's asks and tells as a few statements instead of a dozen a trial, where the speedups
apply (`_speedups`: Optuna's ORM rows written in bulk); elsewhere the sweeper asks and tells
through Optuna's API (`_impl.HpjaxSweeperImpl._ask`, `_tell_batch`)."""

import dataclasses
from typing import Optional

from optuna.trial import TrialState

from . import _speedups

applies = _speedups.bulk_applies
ask = _speedups.bulk_ask
tells_in_bulk = _speedups.tells_in_bulk
tell = _speedups.bulk_tell


@dataclasses.dataclass
class Outcome:
    """What a batch tells of one trial: its final state and values, its objective per epoch
    (steps already stored, by a pruner's live reports, are kept) and user attributes."""

    trial_id: int
    state: TrialState
    values: Optional[list[float]] = None
    intermediate: dict = dataclasses.field(default_factory=dict)
    user_attrs: dict = dataclasses.field(default_factory=dict)


__all__ = ["Outcome", "applies", "ask", "tell", "tells_in_bulk"]
