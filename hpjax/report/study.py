"""An in-memory Optuna study made from a sweep's job directories, for `report.html`'s plots:
any sweeper's sweep (Hydra's basic one included) gets Optuna's visualisations."""

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Optional

from hpjax.report.trials import Trial
from hpjax.results import read_metrics

log = logging.getLogger("hpjax")


def _number(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _infer(values: list[str]) -> Any:
    """A distribution for an override's values: numbers as a range (log where they span two
    decades or more), anything else as categories."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        low, high = min(numbers), max(numbers)
        log_scale = low > 0 and high / low >= 100
        if all(v.lstrip("-").isdigit() for v in values):
            return IntDistribution(int(low), int(high), log=log_scale)
        return FloatDistribution(low, high, log=log_scale)
    return CategoricalDistribution(list(dict.fromkeys(values)))


def _study_distributions(sweep_dir: Path) -> dict:
    """The distributions of the sweep's own study in `study.db`, where it kept one."""
    db = sweep_dir / "study.db"
    if not db.exists():
        return {}
    import optuna

    try:
        url = f"sqlite:///{db.resolve()}"
        distributions: dict = {}
        for summary in optuna.get_all_study_summaries(url, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            for t in study.get_trials(deepcopy=False):
                distributions.update(t.distributions)
        return distributions
    except Exception as e:  # noqa: BLE001  (the report still draws from the job directories)
        log.warning("could not read %s (%s): distributions inferred from the overrides", db, e)
        return {}


def build_study(trials: list[Trial], objectives: dict, sweep_dir: Optional[Path] = None) -> Any:
    """An in-memory Optuna study with one trial per job: its swept overrides as parameters, its
    objectives as values (COMPLETE when all are finite, else FAIL), the objective metric per
    epoch as intermediate values, and status, job and test metrics as user attributes."""
    import optuna
    from optuna.trial import TrialState

    params = [{k: v for k, v in (o.split("=", 1) for o in t.overrides)} for t in trials]
    values: dict[str, list] = {}
    for p in params:
        for k, v in p.items():
            values.setdefault(k, []).append(v)
    swept = [k for k, v in values.items() if len(set(v)) > 1]  # fixed keys say nothing
    known = _study_distributions(Path(sweep_dir)) if sweep_dir is not None else {}
    distributions = {k: _usable(known.get(k), values[k]) or _infer(values[k]) for k in swept}
    directions = ["maximize" if m == "max" else "minimize" for m in objectives.values()]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    try:
        study = optuna.create_study(directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is "experimental"
        study.set_metric_names(list(objectives))
    first = next(iter(objectives))
    for t, p in zip(trials, params, strict=True):
        trial_params = {k: _convert(distributions[k], p[k]) for k in swept if k in p}
        dists = {k: distributions[k] for k in trial_params}
        objective_values = [t.metric(m) for m in objectives]
        ok = t.ok and all(v is not None and math.isfinite(v) for v in objective_values)
        rows = read_metrics(t.job_dir)
        intermediate = {int(r["epoch"]): float(r[first]) for r in rows
                        if isinstance(r.get(first), (int, float)) and math.isfinite(r[first])}
        attrs = {"job": t.job, "status": t.status, "job_dir": str(t.job_dir),
                 "epochs_run": t.get("epochs_run", 0)}
        attrs.update({k: v for k, v in (t.get("test") or {}).items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # create_trial is "experimental" in some versions
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.COMPLETE if ok else TrialState.FAIL,
                values=objective_values if ok else None, params=trial_params,
                distributions=dists, intermediate_values=intermediate, user_attrs=attrs))
    return study


def _usable(distribution: Any, values: list[str]) -> Any:
    """The study's distribution for a key, if every override value fits it."""
    if distribution is None:
        return None
    try:
        for v in values:
            if not _within(distribution, _convert(distribution, v)):
                return None
    except (ValueError, TypeError):
        return None
    return distribution


def _within(distribution: Any, value: Any) -> bool:
    """Whether a value is one of the distribution's, by its public fields (Optuna's own check
    is private): one of the choices, or in [low, high] on the step's grid."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    x = distribution.to_internal_repr(value)  # raises ValueError where it cannot be one
    if isinstance(distribution, CategoricalDistribution):
        return True
    if not distribution.low <= x <= distribution.high:
        return False
    if isinstance(distribution, IntDistribution):
        return (x - distribution.low) % distribution.step == 0
    if distribution.step is None:
        return True
    k = (x - distribution.low) / distribution.step
    return abs(k - round(k)) < 1e-8


def _convert(distribution: Any, text: str) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if str(choice) == text:
                return choice
        return text
    return int(float(text)) if isinstance(distribution, IntDistribution) else float(text)
