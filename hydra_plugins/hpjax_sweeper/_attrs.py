"""What the study keeps of each trial beyond its values, so that Optuna's own tools
(optuna-dashboard, `study.trials_dataframe()`) show the whole sweep: metric names, the objective
per epoch (intermediate values: learning curves), and the trial's status, epochs, test metrics,
parameter count, job directory and, for a pruned trial, where and why its scheduler stopped it
(`stopped`) as user attributes."""

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna

from . import _speedups, _storage

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def name_metrics(study: optuna.Study, names: list[str]) -> None:
    """Sets the study's metric names (once: each call writes to the storage)."""
    if list(study.metric_names or []) == list(names) or len(names) != len(study.directions):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))


def epoch_values(job_dir: str | Path, metric: str) -> dict[int, float]:
    """{epoch: metric} from a job's `metrics.jsonl` (finite values only)."""
    path = Path(job_dir) / METRICS_FILE
    values: dict[int, float] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a kill
            break
        value = row.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and "epoch" in row:
            values[int(row["epoch"])] = float(value)
    return values


def of_result(study: optuna.Study, trial_id: int, result: Any,
              job_dir: str) -> tuple[dict[int, float], dict]:
    """What a trial's result adds to the study: its objective per epoch as intermediate values
    (single objective; outside a database, steps a pruner's live reports stored already are
    left out: `write` leaves them out in a database) and its result's numbers as user
    attributes."""
    values = {}
    if len(study.directions) == 1:
        values = epoch_values(job_dir, result.objective_metric)
        storage = _storage.storage_of(study)
        if not isinstance(storage, optuna.storages.RDBStorage):
            done = storage.get_trial(trial_id).intermediate_values
            values = {epoch: v for epoch, v in values.items() if epoch not in done}
    attrs = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
             "num_params": result.num_params, "objective_metric": result.objective_metric,
             **{k: v for k, v in result.test.items()
                if isinstance(v, (int, float)) and math.isfinite(v)}}
    if result.stopped:  # a scheduler's Stop: the epoch and its reason
        attrs["stopped"] = result.stopped
    return values, attrs


def write(study: optuna.Study, trial_id: int, values: dict[int, float], attrs: dict) -> None:
    """Intermediate values and user attributes of a running trial (steps a pruner's live
    reports stored already are kept). In a database, one transaction where the speedups apply:
    each storage call would commit on its own, and a commit of SQLite waits for the disk (what
    it costs a trial: docs/benchmarks.md)."""
    if _speedups.write_attrs(study, trial_id, values, attrs):
        return
    storage = _storage.storage_of(study)
    if values:
        done = storage.get_trial(trial_id).intermediate_values
        values = {step: v for step, v in values.items() if step not in done}
    for step, value in values.items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
