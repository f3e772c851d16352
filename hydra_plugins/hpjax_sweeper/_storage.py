"""Where a study lives: storage URLs and their passwords, the lock that lets several workers share
a study, and creating (or joining) the study."""

import fcntl
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote

import optuna
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)

PASSWORD_ENV = "HPJAX_STORAGE_PASSWORD"


def safe_url(url: str) -> str:
    """A storage URL with its password masked, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (not a database URL: a journal file's path)
        return url.split("://")[0] + "://***" if "://" in url else url


def hide_password(config: DictConfig, url: Optional[str]) -> None:
    """Takes a storage URL's password out of the config that Hydra saves and passes on (every
    job's .hydra/hydra.yaml, multirun.yaml, submitit's pickles): the config reads it from the
    environment variable HPJAX_STORAGE_PASSWORD instead, which this process sets."""
    match = re.match(r"^([\w+]+://[^:/@]*:)([^@]+)(@.*)$", url or "")
    if match is None or match.group(2).startswith("${"):
        return
    os.environ[PASSWORD_ENV] = unquote(match.group(2))
    hidden = f"{match.group(1)}${{oc.env:{PASSWORD_ENV}}}{match.group(3)}"
    with read_write(config), open_dict(config):
        config.hydra.sweeper.storage = hidden
        config.hydra.overrides.hydra = [
            o for o in config.hydra.overrides.hydra
            if not o.lstrip("+~").startswith("hydra.sweeper.storage=")] + [
            f"hydra.sweeper.storage='{hidden}'"]


def storage_url(storage: Optional[str], sweep_dir: Path) -> str:
    """The configured storage, else `study.db` (SQLite) in the sweep directory."""
    return storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"


@contextmanager
def study_lock(url: str, study_name: str, sweep_dir: Path) -> Iterator[None]:
    """One worker at a time between counting the study's trials and asking new ones (and while
    the study is created): N workers on one study run exactly n_trials. PostgreSQL: an advisory
    lock; a file storage (SQLite, journal): a lock file beside it."""
    if url.startswith("postgresql"):
        import sqlalchemy

        key = zlib.crc32(f"hpjax:{study_name}".encode())
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    path = url.split(":///", 1)[1] if url.startswith("sqlite:///") else (
        url if "://" not in url else str(sweep_dir / "study"))
    with open(f"{path}.hpjax-lock", "w") as f:  # not .lock: the journal backend has that
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def make_storage(url: str, heartbeat_interval: Optional[int], grace_period: Optional[int],
                 on_stale: Optional[Callable]) -> optuna.storages.BaseStorage:
    """Optuna's storage for `url`: a database (RDB, with heartbeats when an interval is set) or,
    for a plain path, a journal file (no heartbeats)."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
        heartbeat_stale_trial_callback=on_stale if heartbeat_interval else None)


def open_study(url: str, study_name: str, directions: list[str], sampler: Any,
               sweep_dir: Path, **storage_options: Any) -> tuple[optuna.Study, int]:
    """Creates the study, or joins it: (study, this sweep's number among the sweeps that joined
    it). Workers starting together create it once, under the study lock."""
    try:
        with study_lock(url, study_name, sweep_dir):
            storage = make_storage(url, **storage_options)
            study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                                        directions=directions, load_if_exists=True)
            worker = _count_worker(storage, study_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"hydra.sweeper.storage={safe_url(url)}: the database driver "
                         f"{e.name!r} is not installed (PostgreSQL: pip install "
                         f"'hpjax[postgres]')") from None
    theirs = [d.name.lower() for d in study.directions]
    if theirs != directions:
        raise ValueError(f"study {study_name!r} in {safe_url(url)} optimises {theirs}, this sweep "
                         f"{directions}: use another hydra.sweeper.study_name")
    return study, worker


def _count_worker(storage: Any, study_name: str) -> int:
    """The next worker number, kept in the study's system attributes; called under the lock."""
    study_id = storage.get_study_id_from_name(study_name)
    worker = storage.get_study_system_attrs(study_id).get("hpjax:workers", 0)
    storage.set_study_system_attr(study_id, "hpjax:workers", worker + 1)
    return worker


def fresh_trials(study: optuna.Study, states: tuple) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as the database has them now: Optuna's cache in front of an RDB
    storage may lag behind what other workers wrote (a worker would count too few trials)."""
    storage = study._storage
    backend = getattr(storage, "_backend", None)  # an RDB storage behind Optuna's cache
    if isinstance(backend, optuna.storages.BaseStorage):
        storage = backend
    return storage.get_all_trials(study._study_id, deepcopy=False, states=states)
