"""Where a study lives: storage URLs and their passwords, the lock that lets several workers share
a study, and creating (or joining) the study."""

import contextlib
import logging
import os
import re
import weakref
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote

import optuna
from filelock import FileLock
from omegaconf import DictConfig, open_dict, read_write

from . import _speedups

log = logging.getLogger(__name__)

PASSWORD_ENV = "HPJAX_STORAGE_PASSWORD"


# Query-string parameters that carry secrets (libpq's `password`, `sslpassword`, tokens, ...)
_SECRET_QUERY = re.compile(r"(?i)([?&](?:[\w.-]*pass(?:word|wd)?|pwd|secret|token|api_?key)=)"
                           r"[^&#]*")


def _secrets(url: str) -> list[tuple[int, int]]:
    """The spans of a URL's secrets: the password of its user-info (which may hold '@': the
    user-info ends at the last '@') and secret query parameters' values."""
    if "://" not in url:
        return []
    start = url.index("://") + 3
    spans = []
    at = url.rfind("@", start)
    if at != -1:
        colon = url.find(":", start, at)
        if colon != -1:
            spans.append((colon + 1, at))
    spans += [(m.end(1), m.end()) for m in _SECRET_QUERY.finditer(url, at + 1 if at != -1
                                                                    else start)]
    return [(a, b) for a, b in spans if b > a]


def _replace(url: str, spans: list[tuple[int, int]], texts: list[str]) -> str:
    for (a, b), text in sorted(zip(spans, texts, strict=True), reverse=True):
        url = url[:a] + text + url[b:]
    return url


def safe_url(url: str) -> str:
    """A storage URL with every secret masked (user-info password, percent-encoded or with '@'
    in it; `password=` and token parameters of its query string), for logs and messages."""
    spans = _secrets(url)
    return _replace(url, spans, ["***"] * len(spans))


def hide_password(config: DictConfig, url: Optional[str]) -> None:
    """Takes a storage URL's secrets out of the config that Hydra saves and passes on (every
    job's .hydra/hydra.yaml, multirun.yaml, submitit's pickles): the config reads them from the
    environment variables HPJAX_STORAGE_PASSWORD (then `_2`, `_3`, ...), which this process
    sets."""
    spans = [(a, b) for a, b in _secrets(url or "") if not url[a:b].startswith("${")]
    if not spans:
        return
    names = [PASSWORD_ENV + (f"_{i + 1}" if i else "") for i in range(len(spans))]
    for (a, b), name in zip(spans, names, strict=True):
        os.environ[name] = unquote(url[a:b])
    hidden = _replace(url, spans, [f"${{oc.env:{name}}}" for name in names])
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
    with FileLock(f"{path}.hpjax-lock"):  # not .lock: the journal backend has that
        yield


def make_storage(url: str, heartbeat_interval: Optional[int], grace_period: Optional[int],
                 on_stale: Optional[Callable]) -> optuna.storages.BaseStorage:
    """Optuna's storage for `url`: a database (RDB, with heartbeats when an interval is set) or,
    for a plain path, a journal file (no heartbeats)."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    # SQLite's default busy timeout (5 s) is shorter than a busy study's write under several
    # workers: they would fail with "database is locked".
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    options = {"engine_kwargs": engine, "heartbeat_interval": heartbeat_interval,
               "grace_period": grace_period,
               "heartbeat_stale_trial_callback": on_stale if heartbeat_interval else None}
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(url, **options)
    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
        # A new database's schema version, recorded at the same moment by a sweep starting
        # beside this one (Optuna records it wherever it finds none, even when only reading,
        # as `study_exists` does outside the study lock): its row (IntegrityError) or its
        # table ("table alembic_version already exists") made first by the other. Made now, it
        # is read. (Any other OperationalError, a locked or unreachable database, is raised.)
        if isinstance(e, sqlalchemy.exc.OperationalError) and "already exists" not in str(e):
            raise
        return optuna.storages.RDBStorage(url, **options)


def open_study(url: str, study_name: str, directions: list[str], sampler: Any,
               sweep_dir: Path, **storage_options: Any) -> tuple[optuna.Study, int]:
    """Creates the study, or joins it: (study, this sweep's number among the sweeps that joined
    it). Workers starting together create it once, under the study lock."""
    try:
        with study_lock(url, study_name, sweep_dir):
            storage = make_storage(url, **storage_options)
            study = create_study(storage, study_name=study_name, sampler=sampler,
                                 directions=directions, load_if_exists=True)
            worker = _count_worker(storage, study_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"hydra.sweeper.storage={safe_url(url)}: the database driver "
                         f"{e.name!r} is not installed (PostgreSQL: pip install "
                         f"'hpjax[postgres]')") from None
    theirs = [d.name.lower() for d in study.directions]
    if theirs != directions:  # (checked before anything is written: `check_study`)
        raise ValueError(f"study {study_name!r} in {safe_url(url)} optimises {theirs}, this sweep "
                         f"{directions}: use another hydra.sweeper.study_name")
    return study, worker


def _count_worker(storage: Any, study_name: str) -> int:
    """The next worker number, kept in the study's system attributes; called under the lock."""
    study_id = storage.get_study_id_from_name(study_name)
    worker = storage.get_study_system_attrs(study_id).get("hpjax:workers", 0)
    storage.set_study_system_attr(study_id, "hpjax:workers", worker + 1)
    return worker


# Each study this plugin created -> (the storage it built for it, the study's id): Optuna's
# `Study` keeps its storage only privately, and wraps an RDB storage in a cache of its own.
_OPENED: "weakref.WeakKeyDictionary[optuna.Study, tuple[Any, int]]" = weakref.WeakKeyDictionary()


def create_study(storage: optuna.storages.BaseStorage, **kwargs: Any) -> optuna.Study:
    """`optuna.create_study(storage=storage, **kwargs)`, keeping `storage` (`storage_of`): the
    plugin reads and writes trials by id through its public methods."""
    study = optuna.create_study(storage=storage, **kwargs)
    _OPENED[study] = (storage, storage.get_study_id_from_name(study.study_name))
    return study


def _opened(study: optuna.Study) -> tuple[Any, int]:
    try:
        return _OPENED[study]
    except KeyError:
        raise ValueError(f"study {study.study_name!r} was not created by the sweeper's "
                         "_storage.create_study: its storage is unknown") from None


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study was created on (`create_study`): an RDB storage is read directly,
    not through Optuna's cache in front of it (which may lag behind other workers' writes)."""
    return _opened(study)[0]


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (what the storage's methods take)."""
    return _opened(study)[1]


def trial_id(study: optuna.Study, trial: Any) -> int:
    """A trial's id in the storage (an `optuna.Trial` or a `FrozenTrial`): the id the trial
    carries where the speedups apply, else the storage's lookup by the trial's number."""
    known = _speedups.trial_id(trial)
    if known is not None:
        return known
    return storage_of(study).get_trial_id_from_study_id_trial_number(study_id(study),
                                                                     trial.number)


def fresh_trials(study: optuna.Study, states: tuple) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as the database has them now: Optuna's cache in front of an RDB
    storage may lag behind what other workers wrote (a worker would count too few trials)."""
    return storage_of(study).get_all_trials(study_id(study), deepcopy=False, states=states)


OWNER_FILE = ".hpjax-study"  # in the sweep directory: the study whose trials it holds


def check_reachable(url: str) -> Optional[str]:
    """Why the storage cannot be used (its driver is missing, its server does not answer, its
    directory does not exist), or None; for a message before anything is written."""
    if "://" not in url:  # a journal file
        return _file_problem(Path(url))
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        return _file_problem(Path(path)) if path and path != ":memory:" else None
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": 10}
                                          if url.startswith("postgresql") else {})
    except ModuleNotFoundError as e:
        return (f"the database driver {e.name!r} is not installed (PostgreSQL: pip install "
                "'hpjax[postgres]')")
    except Exception as e:  # noqa: BLE001  (a URL sqlalchemy cannot read)
        return f"not a storage URL ({type(e).__name__}: {_one_line(e, url)})"
    try:
        with engine.connect():
            return None
    except Exception as e:  # noqa: BLE001
        return f"cannot connect ({_one_line(e, url)})"
    finally:
        engine.dispose()


def _file_problem(path: Path) -> Optional[str]:
    """Why a study file cannot be opened and written, or None."""
    parent = path.resolve().parent
    if not parent.is_dir():
        return f"the directory {parent} does not exist"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"cannot write {path} (read-only file system, or not yours)"
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write in {parent} (read-only file system, or not yours)"
    return None


def check_writable(sweep_dir: Path) -> Optional[str]:
    """Why the sweep directory cannot be written (it, or the folder it would be made in, is on
    a read-only file system or not yours), or None."""
    here = Path(sweep_dir).resolve()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        return f"{here} is not a directory"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"cannot write in {here} (read-only file system, or not yours)"
    return None


SPACE_ATTR, ALGORITHM_ATTR = "hpjax:space", "hpjax:algorithm"  # the study's, when it started


def check_study(url: str, study_name: str, directions: Optional[list], algorithm: str,
                space: dict) -> Optional[str]:
    """Why this sweep may not join the study already in the storage, or None: a file that is
    not a study at all (left as it is), a study made by another tool, or hpjax's own study of
    other objectives, another space or another algorithm (their trials would mix)."""
    problem = _foreign_file(url)
    if problem:
        return f"hydra.sweeper.storage={safe_url(url)}: {problem}; the file is left as it is: " \
               "move it away, or pick another storage or hydra.sweep.dir"
    if not study_exists(url, study_name):
        return None
    storage = _read_only(url)
    study_id = storage.get_study_id_from_name(study_name)
    attrs = storage.get_study_system_attrs(study_id)
    where = f"study {study_name!r} in {safe_url(url)}"
    other = "use another hydra.sweeper.study_name (or hydra.sweep.dir)"
    if "hpjax:workers" not in attrs and storage.get_n_trials(study_id) > 0:
        return f"{where} was not made by hpjax (Optuna's own, or another tool's): its trials " \
               f"would mix with this sweep's; {other}"
    theirs = [d.name.lower() for d in storage.get_study_directions(study_id)]
    if directions is not None and theirs != list(directions):
        return f"{where} optimises {theirs}, this sweep {list(directions)} (objective.mode, " \
               f"hydra.sweeper.direction or objectives): resume it as it was, or {other}"
    their_algorithm, their_space = attrs.get(ALGORITHM_ATTR), attrs.get(SPACE_ATTR)
    if their_algorithm is None:
        return None
    if their_algorithm != algorithm:
        return f"{where} was searched with algorithm={their_algorithm}, this sweep with " \
               f"algorithm={algorithm}: resume it with the same algorithm, or {other}"
    changed = [f"{k}: {their_space.get(k, 'not searched')} there, {space.get(k, 'not searched')}"
               " here" for k in dict.fromkeys([*their_space, *space])
               if their_space.get(k) != space.get(k)]
    if changed:
        return f"{where} searched another space ({'; '.join(changed)}): resume it with the " \
               f"same space, or {other}"
    return None


def remember(study: optuna.Study, algorithm: str, space: dict) -> None:
    """Records the study's algorithm and space when it starts (a resumed sweep is checked
    against them: `check_study`)."""
    storage, sid = _opened(study)
    if SPACE_ATTR not in storage.get_study_system_attrs(sid):
        storage.set_study_system_attr(sid, ALGORITHM_ATTR, algorithm)
        storage.set_study_system_attr(sid, SPACE_ATTR, space)


# Optuna's tables (optuna/storages/_rdb/models.py) and Alembic's: SQLite makes them one at a
# time, so a worker starting beside another on a new file may see some of them and not others.
_OPTUNA_TABLES = frozenset({
    "studies", "study_directions", "study_user_attributes", "study_system_attributes",
    "trials", "trial_user_attributes", "trial_system_attributes", "trial_params",
    "trial_values", "trial_intermediate_values", "trial_heartbeats", "version_info",
    "alembic_version"})


def _foreign_file(url: str) -> Optional[str]:
    """Why a study file that exists is not one hpjax may open (a damaged file, another tool's
    database), or None; nothing is written to it."""
    import json
    import sqlite3

    if "://" not in url:  # a journal: JSON lines of Optuna's operations
        path = Path(url)
        if not path.is_file() or path.stat().st_size == 0:
            return None
        with path.open("rb") as f:
            first = f.readline()
        try:
            if "op_code" in json.loads(first):
                return None
        except (ValueError, TypeError):
            pass
        return f"{path} is not an Optuna journal (its first line is not one of its records)"
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.split(":///", 1)[1])
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type='table'")}
    except sqlite3.DatabaseError as e:
        return f"{path} is not an SQLite database ({e})"
    # Optuna's tables only, some still to come: another worker is making the study's schema
    if tables - _OPTUNA_TABLES and not {"studies", "trials", "version_info"} <= tables:
        return f"{path} is a database of another tool (tables {', '.join(sorted(tables)[:5])}" \
               ") with no Optuna study"
    return None


def _read_only(url: str) -> optuna.storages.BaseStorage:
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    return optuna.storages.RDBStorage(url, skip_table_creation=True)


def _one_line(e: BaseException, url: str = "") -> str:
    """An error's first line, without the URL's secrets (nor a part of one: a driver may print
    a password's tail as the host)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    line = safe_url(lines[0] if lines else type(e).__name__)
    for a, b in _secrets(url):
        for part in sorted({url[a:b], *url[a:b].split("@")}, key=len, reverse=True):
            if len(part) >= 2:
                line = line.replace(part, "***")
    return line


def owner_of(storage: Optional[str], study_name: str) -> dict:
    """What the owner file records: the study's name and its storage (masked; `study.db` for
    the default one, so that a moved sweep directory stays its study's)."""
    return {"study_name": study_name, "storage": safe_url(storage) if storage else "study.db"}


def check_owner(sweep_dir: Path, owner: dict, study_exists: Callable[[], bool]) -> Optional[str]:
    """Why this study may not use `sweep_dir` (another study's trials occupy it), or None."""
    import json

    how = ("resume that study (hydra.sweeper.study_name, hydra.sweeper.storage) or pick "
           "another hydra.sweep.dir")
    marker = sweep_dir / OWNER_FILE
    if marker.is_file():
        try:
            theirs = json.loads(marker.read_text())
        except ValueError:
            theirs = None
        if theirs is not None and theirs != owner:
            return (f"hydra.sweep.dir={sweep_dir} holds the trials of study "
                    f"{theirs.get('study_name')!r} in {theirs.get('storage')}: {how}")
    jobs = sweep_dir.is_dir() and any(p.is_dir() and p.name.isdigit() for p in
                                      sweep_dir.iterdir())
    if jobs and not study_exists():
        return (f"hydra.sweep.dir={sweep_dir} holds job directories of another sweep, but "
                f"study {owner['study_name']!r} is not in {owner['storage']} (a deleted "
                f"study.db, another study_name?): {how}")
    return None


def claim_owner(sweep_dir: Path, owner: dict) -> None:
    import json

    marker = sweep_dir / OWNER_FILE
    if not marker.is_file():
        tmp = marker.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(owner))
        os.replace(tmp, marker)


def study_exists(url: str, study_name: str) -> bool:
    """Whether the storage holds the study, without creating either (a missing SQLite or
    journal file holds none)."""
    if "://" not in url or url.startswith("sqlite:///"):
        path = url.split(":///", 1)[1] if "://" in url else url
        if not Path(path).is_file():
            return False
    try:
        if "://" not in url:
            from optuna.storages.journal import JournalFileBackend

            storage = optuna.storages.JournalStorage(JournalFileBackend(url))
        else:
            storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        return study_name in optuna.get_all_study_names(storage)
    except Exception:  # noqa: BLE001  (no tables yet: no study)
        return False
