"""A batch's asks and tells written to the database in bulk: a few statements a batch instead
of a dozen a trial.

Optuna's RDB storage writes row by row, each write with its own checks (the trial is read back
to see that it still runs, a parameter's first record in the study is looked up to compare
distributions), even in one transaction. Here a batch's asks run against `Staged`, the storage
as the sampler sees it (the study's trials as read once, plus the batch's new trials, in
memory), and `write` puts the new trials in the database in one transaction: their rows,
numbers, parameters, attributes and first heartbeats; `tell` writes a batch's results the same
way. The rows are Optuna's own (its models), so every reader (Optuna, optuna-dashboard, a
resumed sweep) sees what Optuna's path writes (tested: the same study, row for row).

Used for the samplers whose asks only read the study (random, TPE) and an RDB storage without
WAITING trials; any other case takes Optuna's path (`_session.transaction` + `_session.asking`,
or with the speedups off, Optuna's alone). Optuna's internals used: `study._storage` swapped for
the batch, `Study._get_trials` and `_pop_waiting_trial_id` shadowed on the study object,
`Trial._cached_frozen_trial`, the ORM models of `optuna.storages._rdb.models` and
`_create_scoped_session`.
"""

import copy
import datetime
import json
from collections.abc import Callable
from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import _session

_CHUNK = 500  # ids in one `IN (...)`: well under every database's limit


def applies(study: optuna.Study) -> bool:
    """Whether a batch of this study can be asked and told in bulk."""
    sampler = study.sampler
    return (_session.rdb(study) is not None and _session.after_trial_is_a_no_op(sampler)
            and isinstance(sampler, (optuna.samplers.RandomSampler,
                                     optuna.samplers.TPESampler))
            and _session.no_waiting(study))


def tells_in_bulk(study: optuna.Study) -> bool:
    """Whether a batch's results can be written in bulk: a database, and a sampler that does
    nothing after a trial (else `study.tell` runs for each, for the sampler)."""
    return _session.rdb(study) is not None and _session.after_trial_is_a_no_op(study.sampler)


class Staged:
    """The study's storage as a batch's asks see it: writes to the batch's new trials stay in
    memory (`new`); everything else is the storage's. The study's trials are read once, when a
    sampler first asks for them (random never does)."""

    def __init__(self, storage: Any, study_id: int, first_number: int) -> None:
        self._storage, self._study_id = storage, study_id
        self._first_number = first_number
        self._read: Optional[dict] = None  # states -> the study's trials in them
        self.new: list[FrozenTrial] = []
        self._by_id: dict[int, FrozenTrial] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    # -- the batch's new trials --------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: Optional[FrozenTrial] = None) -> int:
        if template_trial is not None:
            raise NotImplementedError("a staged batch creates plain trials only")
        trial_id = -1 - len(self.new)  # until `write`: the database gives the real ones
        trial = FrozenTrial(number=self._first_number + len(self.new), state=TrialState.RUNNING,
                            value=None, values=None, datetime_start=datetime.datetime.now(),
                            datetime_complete=None, params={}, distributions={}, user_attrs={},
                            system_attrs={}, intermediate_values={}, trial_id=trial_id)
        self.new.append(trial)
        self._by_id[trial_id] = trial
        return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: Any) -> None:
        trial = self._by_id.get(trial_id)
        if trial is None:
            return self._storage.set_trial_param(trial_id, param_name, param_value_internal,
                                                 distribution)
        if param_name in trial.distributions:
            optuna.distributions.check_distribution_compatibility(
                trial.distributions[param_name], distribution)
        trial.distributions[param_name] = distribution
        trial.params[param_name] = distribution.to_external_repr(param_value_internal)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id not in self._by_id:
            return self._storage.set_trial_user_attr(trial_id, key, value)
        self._by_id[trial_id].user_attrs[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id not in self._by_id:
            return self._storage.set_trial_system_attr(trial_id, key, value)
        self._by_id[trial_id].system_attrs[key] = value

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Any = None) -> bool:
        if trial_id in self._by_id:
            raise NotImplementedError("a staged trial is told after the batch is written")
        return self._storage.set_trial_state_values(trial_id, state, values)

    # -- reads ------------------------------------------------------------------------------
    def get_trial(self, trial_id: int) -> FrozenTrial:
        trial = self._by_id.get(trial_id)
        return trial if trial is not None else self._storage.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Any = None) -> list[FrozenTrial]:
        read, new = self.pieces(states)
        return copy.deepcopy(read + new) if deepcopy else read + new

    def pieces(self, states: Any = None) -> tuple[list, list]:
        """(the study's trials in `states` as read for the batch: the same list at every ask,
        the batch's new trials in `states`)."""
        if self._read is None:
            self._read = {None: self._storage.get_all_trials(self._study_id, deepcopy=False)}
        key = None if states is None else tuple(states)
        if key not in self._read:  # (filtered once: a batch's asks filter alike)
            self._read[key] = [t for t in self._read[None] if t.state in states]
        return self._read[key], [t for t in self.new if states is None or t.state in states]

    def get_n_trials(self, study_id: int, state: Any = None) -> int:
        return len(self.get_all_trials(study_id, deepcopy=False, states=(
            None if state is None else state if isinstance(state, tuple) else (state,))))

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self.get_trial(trial_id).number

    def get_trial_params(self, trial_id: int) -> dict:
        return self.get_trial(trial_id).params

    def get_trial_user_attrs(self, trial_id: int) -> dict:
        return self.get_trial(trial_id).user_attrs

    def get_trial_system_attrs(self, trial_id: int) -> dict:
        return self.get_trial(trial_id).system_attrs


def ask(study: optuna.Study, n: int, ask_one: Callable[[optuna.Study], optuna.Trial],
        user_attrs: Callable[[int], dict], heartbeat: bool) -> list[optuna.Trial]:
    """`n` new trials, each from `ask_one(study)` (Optuna's ask, its sampler), written in one
    transaction with `user_attrs(number)` and, given `heartbeat`, their first heartbeats."""
    storage, sid = study._storage, study._study_id
    staged = Staged(storage, sid, _count_trials(study))
    study._storage = staged
    study._pop_waiting_trial_id = lambda: None  # (`applies`: the study has none)
    study._get_trials = lambda deepcopy=True, states=None, use_cache=False: (
        staged.get_all_trials(sid, deepcopy=deepcopy, states=states))  # (filtered once)
    try:
        trials = [ask_one(study) for _ in range(n)]
    finally:
        study._storage = storage
        del study._pop_waiting_trial_id, study._get_trials
    ids = write(study, staged.new, user_attrs, heartbeat=heartbeat)
    for trial, frozen, (trial_id, number) in zip(trials, staged.new, ids, strict=True):
        frozen._trial_id, frozen.number = trial_id, number
        trial._trial_id, trial.storage = trial_id, storage
        trial._cached_frozen_trial = frozen
    return trials


def _count_trials(study: optuna.Study) -> int:
    import sqlalchemy

    with _session.rdb(study).engine.connect() as conn:
        return conn.execute(sqlalchemy.text(
            "SELECT COUNT(*) FROM trials WHERE study_id = :sid"),
            {"sid": study._study_id}).scalar()


def write(study: optuna.Study, new: list[FrozenTrial], user_attrs: Callable[[int], dict],
          heartbeat: bool) -> list[tuple[int, int]]:
    """The staged trials as rows of the study, in one transaction: [(trial id, number)]. Their
    numbers are counted under the study's lock as Optuna counts them (the trials before each),
    so workers writing at once never share one; `user_attrs(number)` once the numbers are known."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    backend, sid = _session.rdb(study), study._study_id
    with _create_scoped_session(backend.scoped_session, True) as session:
        models.StudyModel.find_or_raise_by_id(sid, session, for_update=True)
        rows = [models.TrialModel(study_id=sid, number=None, state=TrialState.RUNNING,
                                  datetime_start=t.datetime_start) for t in new]
        session.add_all(rows)
        session.flush()  # their ids
        before = session.query(sqlalchemy.func.count(models.TrialModel.trial_id)).filter(
            models.TrialModel.study_id == sid,
            models.TrialModel.trial_id < rows[0].trial_id).scalar() if rows else 0
        for i, (row, t) in enumerate(zip(rows, new, strict=True)):
            row.number = before + i
            t.user_attrs.update(user_attrs(row.number))
        _check_distributions(session, sid, new)
        params, user, system, beats = [], [], [], []
        for row, t in zip(rows, new, strict=True):
            tid = row.trial_id
            params += [{"trial_id": tid, "param_name": name,
                        "param_value": dist.to_internal_repr(t.params[name]),
                        "distribution_json": optuna.distributions.distribution_to_json(dist)}
                       for name, dist in t.distributions.items()]
            user += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                     for k, v in t.user_attrs.items()]
            system += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                       for k, v in t.system_attrs.items()]
            beats += [{"trial_id": tid}] if heartbeat else []
        _insert(session, models.TrialParamModel, params)
        _insert(session, models.TrialUserAttributeModel, user)
        _insert(session, models.TrialSystemAttributeModel, system)
        _insert(session, models.TrialHeartbeatModel, beats)
        ids = [(row.trial_id, row.number) for row in rows]
    return ids


def _check_distributions(session: Any, study_id: int, new: list[FrozenTrial]) -> None:
    """A parameter's distribution must be compatible with its first record in the study, as
    Optuna's `set_trial_param` checks (once per name here, not once per trial)."""
    from optuna.storages._rdb import models

    seen: dict = {}
    for t in new:
        for name, dist in t.distributions.items():
            if name not in seen:
                record = (session.query(models.TrialParamModel.distribution_json)
                          .join(models.TrialModel)
                          .filter(models.TrialModel.study_id == study_id)
                          .filter(models.TrialParamModel.param_name == name).first())
                seen[name] = (optuna.distributions.json_to_distribution(record[0])
                              if record is not None else dist)
            optuna.distributions.check_distribution_compatibility(seen[name], dist)


def _insert(session: Any, model: Any, rows: list[dict]) -> None:
    """Rows of one of Optuna's tables in one statement (an executemany): the ORM would flush
    them one object at a time."""
    if rows:
        import sqlalchemy

        session.execute(sqlalchemy.insert(model.__table__), rows)


def tell(study: optuna.Study, outcomes: list) -> list[int]:
    """Writes the outcomes in one transaction; returns the ids of the trials it did not tell
    because they no longer ran (another worker marked them failed): their rows are untouched."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    backend = _session.rdb(study)
    refused: list[int] = []
    now = datetime.datetime.now()
    with _create_scoped_session(backend.scoped_session, True) as session:
        for start in range(0, len(outcomes), _CHUNK):
            chunk = outcomes[start:start + _CHUNK]
            ids = [o.trial_id for o in chunk]
            rows = {r.trial_id: r for r in session.query(models.TrialModel).filter(
                models.TrialModel.trial_id.in_(ids)).with_for_update()}
            attrs = {(a.trial_id, a.key): a for a in session.query(
                models.TrialUserAttributeModel).filter(
                    models.TrialUserAttributeModel.trial_id.in_(ids))}
            steps = set(session.query(models.TrialIntermediateValueModel.trial_id,
                                      models.TrialIntermediateValueModel.step).filter(
                models.TrialIntermediateValueModel.trial_id.in_(ids)))
            user, steps_added, values = [], [], []
            model = models.TrialIntermediateValueModel
            for o in chunk:
                row = rows.get(o.trial_id)
                if row is None or row.state != TrialState.RUNNING:
                    refused.append(o.trial_id)
                    continue
                for key, value in o.user_attrs.items():
                    if (o.trial_id, key) in attrs:
                        attrs[o.trial_id, key].value_json = json.dumps(value)
                    else:
                        user.append({"trial_id": o.trial_id, "key": key,
                                     "value_json": json.dumps(value)})
                for step, value in o.intermediate.items():
                    if (o.trial_id, step) not in steps:
                        stored, kind = model.intermediate_value_to_stored_repr(value)
                        steps_added.append({"trial_id": o.trial_id, "step": step,
                                            "intermediate_value": stored,
                                            "intermediate_value_type": kind})
                for objective, value in enumerate(o.values or ()):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                    values.append({"trial_id": o.trial_id, "objective": objective,
                                   "value": stored, "value_type": kind})
                row.state, row.datetime_complete = o.state, now
            session.flush()  # (the rows' updates before the inserts that refer to them)
            _insert(session, models.TrialUserAttributeModel, user)
            _insert(session, model, steps_added)
            _insert(session, models.TrialValueModel, values)
    return refused


__all__ = ["Staged", "applies", "ask", "tell", "tells_in_bulk", "write"]
