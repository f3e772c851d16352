"""A batch's study work at the cost of one, through Optuna's internals (`_speedups` selects it):
its storage writes in one database transaction, its asks reading the study once, its trials
counted by the database, its results told straight to the storage.

Optuna's RDB storage commits every write on its own (a new trial, each parameter, each attribute,
each value: about ten commits a trial), and a commit of SQLite waits for the disk. `transaction`
makes the storage's sessions one session for the duration of a batch, committed once at its
end: a kill mid-batch loses the whole batch's writes or none (asks: no trial was created, the
batch is asked again; tells: the batch's trials stay RUNNING and the next sweep tells them from
their result.json). Counting a study's finished trials by loading them all costs time in
proportion to the study (every batch: quadratic in the sweep); `count` asks the database.

Optuna's internals used: `RDBStorage.scoped_session` (swapped for the block), its tables (SQL),
`Study._get_trials` and `_pop_waiting_trial_id` and the storage's `create_new_trial` shadowed
on the study and storage objects for the block (never on their classes), `study._storage`,
`study._study_id`, `FrozenTrial._trial_id`, `TPESampler._constraints_func` and
`_random_sampler`.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import optuna
from optuna.trial import TrialState


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
    if no_waiting(study):
        study._pop_waiting_trial_id = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del study._get_trials, storage.create_new_trial
        vars(study).pop("_pop_waiting_trial_id", None)




def no_waiting(study: optuna.Study) -> bool:
    storage = rdb(study)
    if storage is None:
        return False
    import sqlalchemy

    with storage.engine.connect() as conn:
        return not conn.execute(sqlalchemy.text(
            "SELECT COUNT(*) FROM trials WHERE study_id = :sid AND state = 'WAITING'"),
            {"sid": study._study_id}).scalar()




def after_trial_is_a_no_op(sampler: Any) -> bool:
    if type(sampler).after_trial is optuna.samplers.BaseSampler.after_trial:
        return True
    return isinstance(sampler, (optuna.samplers.TPESampler, optuna.samplers.RandomSampler)) \
        and getattr(sampler, "_constraints_func", None) is None and type(
            getattr(sampler, "_random_sampler", sampler)) is optuna.samplers.RandomSampler


def count(study: optuna.Study, final: tuple) -> Optional[tuple[int, int]]:
    """(finished, running) asked of the database: trials that count toward n_trials (COMPLETE,
    PRUNED, or FAIL with a `status` in `final`), and trials RUNNING; None for a storage that is
    not a database."""
    storage = rdb(study)
    if storage is None:
        return None
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
            {"sid": sid, "final": [f'"{s}"' for s in final]}).scalar()
    return (states.get("COMPLETE", 0) + states.get("PRUNED", 0) + failed,
            states.get("RUNNING", 0))


def finish(study: optuna.Study, trial_id: int, state: TrialState,
           values: Optional[list] = None) -> bool:
    """`study.tell` of a COMPLETE (finite values, checked by the caller) or FAIL trial straight
    to the storage, skipping the two reads of the trial that `tell` makes to check it; False
    (nothing done) where the sampler does something after a trial."""
    if not after_trial_is_a_no_op(study.sampler):
        return False
    if not study._storage.set_trial_state_values(trial_id, state, values):
        raise optuna.exceptions.UpdateFinishedTrialError(
            f"trial {trial_id} could not be set to {state.name}")
    return True
