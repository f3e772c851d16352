"""What a sweep checks before it writes anything (the space against the schema, the storage, the
sweep directory's owner), and the space it prints at its start.

A problem is one line on stderr, `hpjax: error: ...`, and exit code 2: no study, no directory,
no `multirun.yaml`.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

import hpjax.engine

from . import _search, _space, _storage

log = logging.getLogger(__name__)


def before_writing(*, params: dict, arguments: list[str], algorithm: str, hydra_context: Any,
                   config: DictConfig, task_function: Callable, storage: Optional[str],
                   study_name: str, sweep_dir: Path, directions: Optional[list] = None,
                   sampler: Optional[str] = None) -> "_space.ConditionalSpace":
    """The sweep's space, checked, and everything that would fail every trial (a package, the
    storage, the sweep directory); exits 2 with one line when the sweep cannot run."""
    try:
        space = _search.parse([f"{k}={v}" for k, v in params.items()] + list(arguments))
        if algorithm == "grid":
            space.grid()  # raises for continuous keys
        _search.check_installed(sampler or algorithm)  # the one that proposes the trials
        problem = _storage.check_writable(sweep_dir)
        if problem:
            raise _space.SweepError(f"hydra.sweep.dir={sweep_dir}: {problem}")
        loader = hydra_context.config_loader
        repository = getattr(loader, "repository", None)
        checked = _space.check(
            space, compose=lambda overrides: loader.load_sweep_config(config, overrides),
            is_group=(lambda key: repository.group_exists(key)) if repository else
            (lambda key: False),
            validate=hpjax.validate if hpjax.engine.is_task(task_function) else None)
        url = _storage.storage_url(storage, sweep_dir)
        problem = _storage.check_reachable(url) if storage else None  # else: study.db
        if problem:
            raise _space.SweepError(f"hydra.sweeper.storage={_storage.safe_url(url)}: {problem}")
        problem = _storage.check_owner(sweep_dir, _storage.owner_of(storage, study_name),
                                       lambda: _storage.study_exists(url, study_name))
        if problem:
            raise _space.SweepError(problem)
        problem = _storage.check_study(url, study_name, directions, algorithm, shown(checked))
        if problem:
            raise _space.SweepError(problem)
    except _search.SearchSpaceError as e:
        hpjax.engine.stop(str(e))
    return checked


def shown(space: "_space.ConditionalSpace") -> dict:
    """The space as a study records it (`hpjax:space`): key -> its distribution as printed."""
    return {p.key: _show(p.distribution) for p in space.params}


def describe(space: "_space.ConditionalSpace", arguments: list[str], config: DictConfig,
             total: Optional[int], algorithm: str) -> str:
    """The space as the sweep prints it: each axis, what it searches, where it came from (the
    command line, a preset, the config file) and the number of trials."""
    from_cli = {o.split("=", 1)[0] for o in arguments}
    preset = OmegaConf.select(config, "hydra.runtime.choices.search", default=None)
    origin = ("default grid (conf/search/default.yaml)" if preset == "default" else
              f"preset search={preset}" if preset else "config file (hydra.sweeper.params)")
    lines = [f"search space: {len(space.params)} axes, {total} trials ({algorithm})"]
    width = max((len(p.key) for p in space.params), default=0)
    for p in space.params:
        where = "command line" if p.key in from_cli else origin
        cond = "" if all(p.key in keys for keys in space.active.values()) else \
            "  (only under some choices of " + ", ".join(space.groups) + ")"
        lines.append(f"  {p.key:<{width}}  {_show(p.distribution)}  [{where}]{cond}")
    return "\n".join(lines)


def _show(dist: Any) -> str:
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return f"choice({', '.join(map(str, dist.choices))})"
    kind = "int" if isinstance(dist, d.IntDistribution) else "float"
    scale = " log" if dist.log else ""
    step = f" step {dist.step}" if dist.step not in (None, 1) else ""
    return f"{kind}{scale} [{dist.low}, {dist.high}]{step}"


def refuse_foreign(study: Any, distributions: dict) -> None:
    """Values from a shared study are data, never code: each trial waiting in the study (one
    enqueued by a user or a tool, another worker's trial run again) keeps only the parameters
    of this sweep's own space, each within its distribution; any other key (`model._target_`)
    or value (outside its range, not one of its choices) is refused with a warning and never
    reaches a job's overrides (the sampler draws it instead)."""
    from optuna.trial import TrialState

    for t in _storage.fresh_trials(study, (TrialState.WAITING,)):
        fixed = t.system_attrs.get("fixed_params") or {}
        kept = {k: v for k, v in fixed.items()
                if k in distributions and _contains(distributions[k], v)}
        if kept == fixed:
            continue
        refused = [f"{k}={fixed[k]!r}" for k in fixed if k not in kept]
        log.warning("trial %d: refused the enqueued %s, outside this sweep's space (%s); never "
                    "applied", t.number, ", ".join(refused), "its other values are kept" if kept
                    else "its values are drawn by the sampler")
        _storage.storage_of(study).set_trial_system_attr(_storage.trial_id(study, t),
                                                         "fixed_params", kept)


def _contains(dist: Any, value: Any) -> bool:
    """Whether `value` is one of the distribution's (its public fields: the choices; `low`,
    `high` and `step`), as Optuna checks a parameter against its distribution."""
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        try:
            dist.to_internal_repr(value)  # (its index among the choices)
        except (ValueError, TypeError):
            return False
        return True
    if isinstance(value, bool):
        return False
    try:
        x = dist.to_internal_repr(value)  # a float: not NaN, positive on a log scale
    except (ValueError, TypeError):
        return False
    if not dist.low <= x <= dist.high:
        return False
    if isinstance(dist, d.IntDistribution):
        return (x - dist.low) % dist.step == 0
    if dist.step is None:
        return True
    k = (x - dist.low) / dist.step
    return abs(k - round(k)) < 1e-8
