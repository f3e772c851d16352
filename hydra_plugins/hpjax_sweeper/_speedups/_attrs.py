"""A trial's learning curve and attributes as rows of Optuna's ORM models, in one transaction
(`_speedups` selects it). Optuna's internals used: `optuna.storages._rdb.models`,
`_create_scoped_session`, the RDB storage's `scoped_session` behind `study._storage._backend`."""

import json

import optuna


def write(study: optuna.Study, trial_id: int, values: dict[int, float], attrs: dict) -> bool:
    """Intermediate values (steps stored already are kept) and user attributes of a running
    trial in one transaction; False (nothing written) outside a database."""
    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return False
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    model = models.TrialIntermediateValueModel
    with _create_scoped_session(backend.scoped_session, True) as session:
        existing = {a.key: a for a in session.query(models.TrialUserAttributeModel)
                    .filter_by(trial_id=trial_id)}
        if values:  # steps a pruner's live reports stored already are kept
            done = {step for (step,) in session.query(model.step).filter_by(trial_id=trial_id)}
            values = {step: v for step, v in values.items() if step not in done}
        for step, value in values.items():
            stored, kind = model.intermediate_value_to_stored_repr(value)
            session.add(model(trial_id=trial_id, step=step, intermediate_value=stored,
                              intermediate_value_type=kind))
        for key, value in attrs.items():
            if key in existing:
                existing[key].value_json = json.dumps(value)
            else:
                session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=key,
                                                           value_json=json.dumps(value)))
    return True
