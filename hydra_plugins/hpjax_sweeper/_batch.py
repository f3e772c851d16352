"""A batch's study work at the cost of one: its asks (and its tells) in one database transaction,
and the study's trials counted by the database instead of loaded.

Optuna's RDB storage commits every write on its own (a new trial, each parameter, each attribute,
each value: about ten commits a trial), and a commit of SQLite waits for the disk.
`transaction` makes the storage's
sessions one session for the duration of a batch, committed once at its end: a kill mid-batch
loses the whole batch's writes or none (asks: no trial was created, the batch is asked again;
tells: the batch's trials stay RUNNING and the next sweep tells them from their result.json).
Counting a study's finished trials by loading them all costs time in proportion to the study
(every batch: quadratic in the sweep); `count` asks the database to count.

Both use two of Optuna's internals, `RDBStorage.scoped_session` and its tables; where these are
missing (or for a journal file), Optuna's own one-write-at-a-time path runs. `asking` reads the
study's trials once for a batch's asks, and `finish` tells a result straight to the storage
where the sampler does nothing after a trial.
"""

import dataclasses
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import optuna
from hydra.core.utils import JobReturn
from optuna.trial import TrialState

from ._storage import fresh_trials

# Trials that ended with a result (diverged, failed on a bad value) count toward n_trials; a trial
# left RUNNING by a killed sweep does not, and is run again on resume.
FINAL_FAIL = ("diverged", "failed")


def rdb(study: optuna.Study) -> Optional[optuna.storages.RDBStorage]:
    """The study's RDB storage (behind Optuna's cache), None for any other."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)
    if isinstance(storage, optuna.storages.RDBStorage) and hasattr(storage, "scoped_session"):
        return storage
    return None


class _BatchSession:
    """The batch's one session as each of Optuna's storage calls sees it: its commit a flush,
    its close nothing; a rollback (a write the database refused) ends the batch."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def commit(self) -> None:
        self._session.flush()

    def close(self) -> None:
        pass

    def rollback(self) -> None:
        self._session.rollback()
        raise optuna.exceptions.StorageInternalError(
            "a write of the batch was refused: the batch's transaction was rolled back")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class _BatchRegistry:
    """Stands in for the storage's `scoped_session`: the batch's session in the batch's thread,
    the usual sessions in any other (a heartbeat thread)."""

    def __init__(self, registry: Any) -> None:
        self.registry, self.thread = registry, threading.get_ident()
        self.session = registry.session_factory()
        self.proxy = _BatchSession(self.session)

    def __call__(self) -> Any:
        return self.proxy if threading.get_ident() == self.thread else self.registry()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)


@contextmanager
def transaction(study: optuna.Study) -> Iterator[None]:
    """Every storage write of the block in one transaction, committed when the block ends (and
    rolled back, writing nothing, if it raises)."""
    storage = rdb(study)
    if storage is None or isinstance(storage.scoped_session, _BatchRegistry):
        yield
        return
    batch = _BatchRegistry(storage.scoped_session)
    storage.scoped_session = batch
    try:
        yield
        batch.session.commit()
    except BaseException:
        batch.session.rollback()
        raise
    finally:
        storage.scoped_session = batch.registry
        batch.session.close()


@contextmanager
def asking(study: optuna.Study) -> Iterator[None]:
    """A batch's asks at the cost of one. Optuna's ask reads back every unfinished trial of the
    study (the batch's own RUNNING trials included) to look for WAITING ones, and a sampler that
    models the study (TPE, with the constant liar) reads the study's trials again at each ask and
    each parameter. In the block, an ask looks for WAITING trials only when the database has
    some, and the study's trials are read once: later reads see them plus the block's own new
    trials (another worker's trial that finishes meanwhile is seen from the next batch on, as
    with any parallel sampler). The samplers propose the same points (tested)."""
    if "_get_trials" in vars(study):  # nested
        yield
        return
    storage = study._storage
    read, create = study._get_trials, storage.create_new_trial
    start: list = []  # the study's trials when the block began
    new: list = []  # the block's new trials: [id, its FrozenTrial, whether that is final]
    finished: dict = {}  # states -> the trials in them (a list that stays the same)

    def create_new_trial(*args: Any, **kwargs: Any) -> int:
        trial_id = create(*args, **kwargs)
        new.append([trial_id, None, False])
        return trial_id

    def get_trials(deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list:
        if deepcopy:
            return read(deepcopy=deepcopy, states=states, use_cache=use_cache)
        if not start:  # (read during the block's first ask: without its new trial)
            ours = {item[0] for item in new}
            start.append([t for t in read(deepcopy=False, states=None, use_cache=False)
                          if t._trial_id not in ours])
        if states is not None and TrialState.RUNNING not in states:
            key = tuple(states)
            if key not in finished:
                finished[key] = [t for t in start[0] if t.state in states]
            return finished[key]
        for i, item in enumerate(new):  # the last one may still be taking its parameters
            last = i == len(new) - 1
            if item[1] is None or last or not item[2]:
                item[1], item[2] = storage.get_trial(item[0]), not last
        trials = start[0] + [item[1] for item in new]
        return trials if states is None else [t for t in trials if t.state in states]

    study._get_trials = get_trials  # type: ignore[method-assign]
    storage.create_new_trial = create_new_trial  # type: ignore[method-assign]
    if _no_waiting(study):
        study._pop_waiting_trial_id = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del study._get_trials, storage.create_new_trial
        vars(study).pop("_pop_waiting_trial_id", None)


def _no_waiting(study: optuna.Study) -> bool:
    storage = rdb(study)
    if storage is None:
        return False
    import sqlalchemy

    with storage.engine.connect() as conn:
        return not conn.execute(sqlalchemy.text(
            "SELECT COUNT(*) FROM trials WHERE study_id = :sid AND state = 'WAITING'"),
            {"sid": study._study_id}).scalar()


def _after_trial_is_a_no_op(sampler: Any) -> bool:
    if type(sampler).after_trial is optuna.samplers.BaseSampler.after_trial:
        return True
    return isinstance(sampler, (optuna.samplers.TPESampler, optuna.samplers.RandomSampler)) \
        and getattr(sampler, "_constraints_func", None) is None and type(
            getattr(sampler, "_random_sampler", sampler)) is optuna.samplers.RandomSampler


def finish(study: optuna.Study, trial_id: int, state: TrialState,
           values: Optional[list] = None) -> None:
    """`study.tell` of a COMPLETE (finite values, checked by the caller) or FAIL trial: straight
    to the storage where the sampler does nothing after a trial (random, TPE without
    constraints), skipping the two reads of the trial that `tell` makes to check it."""
    if not _after_trial_is_a_no_op(study.sampler):
        number = study._storage.get_trial_number_from_id(trial_id)
        study.tell(number, values, state=state)
        return
    if not study._storage.set_trial_state_values(trial_id, state, values):
        raise optuna.exceptions.UpdateFinishedTrialError(
            f"trial {trial_id} could not be set to {state.name}")


def count(study: optuna.Study) -> tuple[int, int]:
    """(finished, running): trials that count toward n_trials (COMPLETE, PRUNED, or FAIL with a
    final status), and trials RUNNING."""
    storage = rdb(study)
    if storage is None:
        running = len(fresh_trials(study, (TrialState.RUNNING,)))
        return len(finished_trials(study)), running
    import sqlalchemy

    sid = study._study_id
    with storage.engine.connect() as conn:
        states = dict(conn.execute(sqlalchemy.text(
            "SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state"),
            {"sid": sid}).all())
        failed = conn.execute(sqlalchemy.text(
            "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a "
            "ON a.trial_id = t.trial_id WHERE t.study_id = :sid AND t.state = 'FAIL' "
            "AND a.key = 'status' AND a.value_json IN :final").bindparams(
                sqlalchemy.bindparam("final", expanding=True)),
            {"sid": sid, "final": [f'"{s}"' for s in FINAL_FAIL]}).scalar()
    return (states.get("COMPLETE", 0) + states.get("PRUNED", 0) + failed,
            states.get("RUNNING", 0))


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
