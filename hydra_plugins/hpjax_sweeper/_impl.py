import fcntl
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hpjax import search
from hpjax.results import Result, parse_objectives


def result_metric(result: dict, name: str):
    names = set(Result.__dataclass_fields__)
    return Result(**{k: v for k, v in result.items() if k in names}).metric(name)

log = logging.getLogger(__name__)

_MODES = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}
# Trials that ended with a result (diverged, failed on a bad value) count toward n_trials; a trial
# left RUNNING by a killed sweep does not, and is run again on resume.
_FINAL_FAIL = ("diverged", "failed")


def safe_url(url: str) -> str:
    """A storage URL with its password masked, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://")[0] + "://***" if "://" in url else url


def _fresh_trials(study: optuna.Study, states: tuple) -> list:
    """The study's trials as the database has them now: Optuna's cache in front of an RDB
    storage may lag behind what other workers wrote (a worker then counted one trial too few
    and ran a tenth trial of nine)."""
    storage = study._storage
    backend = getattr(storage, "_backend", None)  # an RDB storage behind Optuna's cache
    if isinstance(backend, optuna.storages.BaseStorage):
        storage = backend
    return storage.get_all_trials(study._study_id, deepcopy=False, states=states)


PASSWORD_ENV = "HPJAX_STORAGE_PASSWORD"


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


class HpjaxSweeperImpl(Sweeper):
    def __init__(self, algorithm: str, n_trials: Optional[int], batch_size: int, seed: int,
                 params: Optional[dict], storage: Optional[str], study_name: str,
                 objectives: Optional[list], direction: Optional[str],
                 fail_stale_trials: bool, heartbeat_interval: Optional[int] = None,
                 grace_period: Optional[int] = None, max_retries: int = 2,
                 poll_s: float = 2.0) -> None:
        if algorithm not in search.ALGORITHMS:
            raise ValueError(f"hydra.sweeper.algorithm={algorithm!r}: must be one of "
                             f"{', '.join(search.ALGORITHMS)}")
        if n_trials is None and algorithm != "grid":
            raise ValueError(f"hydra.sweeper.n_trials=null is only allowed with algorithm=grid; "
                             f"set a number of trials for algorithm={algorithm}")
        if n_trials is not None and n_trials < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials}: must be >= 1 (or null for grid)")
        if batch_size < 1:
            raise ValueError(f"hydra.sweeper.batch_size={batch_size}: must be >= 1")
        self.algorithm, self.n_trials, self.batch_size, self.seed = (
            algorithm, n_trials, batch_size, seed)
        self.params = dict(params or {})
        self.storage, self.study_name = storage, study_name
        self.objectives = parse_objectives(objectives or [])
        self.direction, self.fail_stale_trials = direction, fail_stale_trials
        if heartbeat_interval is not None and heartbeat_interval < 1:
            raise ValueError(f"hydra.sweeper.heartbeat_interval={heartbeat_interval}: must be "
                             ">= 1 second, or null (off)")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or (2 * heartbeat_interval if heartbeat_interval
                                             else None)
        self.max_retries, self.poll_s = max_retries, poll_s
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        hide_password(config, self.storage)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- the study -------------------------------------------------------------------------
    def _directions(self) -> tuple[list[str], list[str]]:
        """Objective names (empty: the task's return value) and Optuna directions."""
        if self.objectives:
            return list(self.objectives), [_MODES[v] for v in self.objectives.values()]
        mode = self.direction or OmegaConf.select(self.config, "objective.mode", default=None)
        if mode not in _MODES and mode is not None:
            raise ValueError(f"hydra.sweeper.direction={mode!r}: must be minimize or maximize")
        return [], [_MODES.get(mode, "minimize")]

    def _url(self, sweep_dir: Path) -> str:
        return self.storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"

    @contextmanager
    def _lock(self, sweep_dir: Path) -> Iterator[None]:
        """One worker at a time between counting the study's trials and asking new ones (and
        while the study is created): N workers on one study run exactly n_trials. PostgreSQL:
        an advisory lock; a file storage (SQLite, journal): a lock file beside it."""
        url = self._url(sweep_dir)
        if url.startswith("postgresql"):
            import sqlalchemy

            key = zlib.crc32(f"hpjax:{self.study_name}".encode())
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

    def _storage(self, url: str) -> Any:
        if "://" not in url:  # a path: Optuna's journal file (no heartbeats)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url))
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period,
            heartbeat_stale_trial_callback=self._stale if self.heartbeat_interval else None)

    def _study(self, sweep_dir: Path, directions: list[str]) -> optuna.Study:
        url = self._url(sweep_dir)
        sampler = search.make_sampler(self.algorithm, seed=self.seed,
                                      n_objectives=len(directions), batch_size=self.batch_size)
        try:
            with self._lock(sweep_dir):  # workers starting together create the study once
                storage = self._storage(url)
                study = optuna.create_study(storage=storage, study_name=self.study_name,
                                            sampler=sampler, directions=directions,
                                            load_if_exists=True)
                worker = self._count_worker(storage)
        except ModuleNotFoundError as e:
            raise ValueError(f"hydra.sweeper.storage={safe_url(url)}: the database driver "
                             f"{e.name!r} is not installed (PostgreSQL: pip install "
                             f"'hpjax[postgres]')") from None
        if [d.name.lower() for d in study.directions] != directions:
            raise ValueError(f"study {self.study_name!r} in {safe_url(url)} optimises "
                             f"{[d.name.lower() for d in study.directions]}, this sweep "
                             f"{directions}: use another hydra.sweeper.study_name")
        if worker and self.seed is not None:
            # Workers of one study with one seed would propose the same points: each worker
            # after the first draws from seed + its number (a sweep on its own is worker 0).
            study.sampler = search.make_sampler(self.algorithm, seed=self.seed + worker,
                                                n_objectives=len(directions),
                                                batch_size=self.batch_size)
            log.info("worker %d of study %r: sampler seed %d", worker, self.study_name,
                     self.seed + worker)
        log.info("study %r in %s (%s, %s)", self.study_name, safe_url(url), self.algorithm,
                 ", ".join(directions))
        return study

    def _count_worker(self, storage: Any) -> int:
        """This sweep's number among the sweeps that joined the study (0 for the first), kept
        in the study's system attributes; called under the study lock."""
        study_id = storage.get_study_id_from_name(self.study_name)
        worker = storage.get_study_system_attrs(study_id).get("hpjax:workers", 0)
        storage.set_study_system_attr(study_id, "hpjax:workers", worker + 1)
        return worker

    def _fail_stale(self, study: optuna.Study) -> None:
        """Trials left RUNNING by a killed sweep: with heartbeats, those whose worker stopped
        reporting; without, every running one (one driver per study)."""
        if self.heartbeat_interval:
            optuna.storages.fail_stale_trials(study)  # calls self._stale for each
            return
        names, _ = self._directions()
        for t in _fresh_trials(study, (optuna.trial.TrialState.RUNNING,)):
            result = Path(t.user_attrs.get("job_dir") or "/nonexistent") / "result.json"
            if result.exists():  # it ran to the end (a cluster job outlives its driver)
                self._tell_result(study, t._trial_id, json.loads(result.read_text()), names)
                log.info("trial %d finished after its sweep was killed: result taken from %s",
                         t.number, result)
                continue
            study._storage.set_trial_user_attr(t._trial_id, "status", "killed")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            self._stale(study, t)

    def _stale(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A trial marked failed because its worker stopped (a FAIL without a `status` of
        its own, which `_finished` does not count): run it again with the same parameters (its
        checkpoints go along), up to `max_retries` times."""
        retries = trial.user_attrs.get("retries", 0)
        if retries >= self.max_retries or not trial.params:
            log.warning("trial %d stopped reporting: marked failed (%d retries, no more)",
                        trial.number, retries)
            return
        study.enqueue_trial(trial.params, user_attrs={"retries": retries + 1,
                                                      "retry_of": trial.number,
                                                      "retry_of_dir": trial.user_attrs.get(
                                                          "job_dir")})
        log.warning("trial %d stopped reporting: marked failed, its parameters run again "
                    "(retry %d of %d)", trial.number, retries + 1, self.max_retries)

    @staticmethod
    def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        return [t for t in _fresh_trials(study, states)
                if t.state == optuna.trial.TrialState.COMPLETE
                or t.user_attrs.get("status") in _FINAL_FAIL]

    def _enqueue_grid(self, study: optuna.Study, space: search.SearchSpace) -> int:
        points = space.grid()
        total = len(points) if self.n_trials is None else min(self.n_trials, len(points))
        key = lambda params: tuple(sorted(params.items()))
        taken = {key(t.params) for t in self._finished(study)}
        taken |= {key(t.params) for t in _fresh_trials(
            study, (optuna.trial.TrialState.RUNNING,))}
        taken |= {key(t.system_attrs.get("fixed_params", {})) for t in _fresh_trials(
            study, (optuna.trial.TrialState.WAITING,))}
        for point in points[:total]:
            if key(point) not in taken:
                study.enqueue_trial(point)
        return total

    # -- the sweep -------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Heartbeats are "experimental" in Optuna and "meant for Study.optimize": this sweeper
        # records them itself (`_heartbeat`), as optimize does.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                                module="optuna")
        warnings.filterwarnings("ignore", ".*heartbeat.*", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with")
        space = search.parse([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        names, directions = self._directions()
        study = self._study(sweep_dir, directions)
        with self._lock(sweep_dir):
            if self.fail_stale_trials or self.heartbeat_interval:
                self._fail_stale(study)
            if self.algorithm == "grid":
                total = self._enqueue_grid(study, space)
                distributions = space.grid_distributions
            else:
                total, distributions = self.n_trials, space.distributions
            finished = len(self._finished(study))
        if finished:
            log.info("resuming: %d of %d trials already finished", finished, total)

        returns: list[Sequence[JobReturn]] = []
        start = time.perf_counter()
        waiting = False
        while True:
            trials, finished, running = self._claim(study, sweep_dir, space, total,
                                                    distributions)
            if not trials:
                if finished >= total:
                    break
                if not waiting:  # other workers run the rest: wait in case one of them dies
                    log.info("[study] %d/%d trials finished, %d running in other workers: "
                             "waiting", finished, total, running)
                waiting = True
                time.sleep(self.poll_s)
                continue
            waiting = False
            batch = [space.overrides(t.params) for t in trials]
            self.validate_batch_is_legal(batch)
            self._carry_checkpoints(trials, sweep_dir)
            with self._heartbeat(study, trials):
                results = self._launch(batch, [t.number for t in trials])
            for trial, ret in zip(trials, results, strict=True):
                try:
                    self._tell(study, trial, ret, names)
                except optuna.exceptions.UpdateFinishedTrialError:
                    log.warning("trial %d was marked failed by another worker while it ran (two "
                                "workers on one study need heartbeat_interval, or "
                                "fail_stale_trials=false): its result is not told",
                                trial.number)
            returns.append(results)
            log.info("[study] %d/%d trials finished, %s, %.1f s",
                     len(self._finished(study)), total,
                     self._best_line(study, names or [OmegaConf.select(
                         self.config, "objective.metric", default="objective")]),
                     time.perf_counter() - start)
        return returns

    def _claim(self, study: optuna.Study, sweep_dir: Path, space: search.SearchSpace,
               total: int, distributions: dict) -> tuple[list, int, int]:
        """Asks the next batch of trials, as many as the study still lacks: (trials, finished,
        running elsewhere)."""
        with self._lock(sweep_dir):
            if self.heartbeat_interval:
                self._fail_stale(study)
                if self.algorithm == "grid":
                    self._enqueue_grid(study, space)
            finished = len(self._finished(study))
            running = len(_fresh_trials(study, (optuna.trial.TrialState.RUNNING,)))
            room = min(self.batch_size, total - finished - running)
            trials = [study.ask(distributions) for _ in range(max(room, 0))]
            job_dir = self._job_dir(sweep_dir)
            for t in trials:
                if job_dir is not None:
                    t.set_user_attr("job_dir", str(job_dir(t.number)))
            return trials, finished, running

    def _job_dir(self, sweep_dir: Path) -> Any:
        """Trial number -> job directory, where the default `hydra.sweep.subdir` is in use."""
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        return (lambda n: sweep_dir / str(n)) if subdir == "${hydra.job.num}" else None

    def _carry_checkpoints(self, trials: list, sweep_dir: Path) -> None:
        """A retried trial continues from the checkpoints of the run that stopped."""
        for t in trials:
            old, new = t.user_attrs.get("retry_of_dir"), t.user_attrs.get("job_dir")
            if old and new and (Path(old) / "checkpoints").is_dir():
                shutil.copytree(Path(old) / "checkpoints", Path(new) / "checkpoints",
                                dirs_exist_ok=True)
                log.info("trial %d continues trial %d from its checkpoints", t.number,
                         t.user_attrs["retry_of"])

    @contextmanager
    def _heartbeat(self, study: optuna.Study, trials: list) -> Iterator[None]:
        """Records the batch's heartbeats while it runs, so other workers know it is alive."""
        if not self.heartbeat_interval:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while True:
                for t in trials:
                    study._storage.record_heartbeat(t._trial_id)
                if stop.wait(self.heartbeat_interval):
                    return

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _launch(self, batch: list[list[str]], numbers: list[int]) -> list[JobReturn]:
        # Job directory = trial number, so a resumed sweep never overwrites an earlier trial's.
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        return [r for overrides, n in zip(batch, numbers, strict=True)
                for r in self.launcher.launch([overrides], initial_job_idx=n)]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn,
              names: list[str]) -> None:
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") \
            if ret.hydra_cfg is not None else None
        if output_dir:
            trial.set_user_attr("job_dir", str(output_dir))
        if ret.status != JobStatus.COMPLETED:
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("error", repr(ret._return_value)[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d failed: %r", trial.number, ret._return_value)
            return
        result_file = Path(output_dir) / "result.json" if output_dir else None
        if result_file is not None and result_file.exists():
            self._tell_result(study, trial._trial_id, json.loads(result_file.read_text()), names)
        else:  # a task function of its own: its return value is the objective
            value = ret.return_value
            self._tell_values(study, trial._trial_id, "ok", list(value) if isinstance(
                value, (list, tuple)) else [value])

    def _tell_result(self, study: optuna.Study, trial_id: int, result: dict,
                     names: list[str]) -> None:
        """Tells a trial's result.json to the study."""
        values = ([result_metric(result, n) for n in names] if names
                  else [result.get("objective")])
        self._tell_values(study, trial_id, result.get("status", "ok"), values)

    @staticmethod
    def _tell_values(study: optuna.Study, trial_id: int, status: str, values: list) -> None:
        storage, number = study._storage, study._storage.get_trial_number_from_id(trial_id)
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        if status == "ok" and finite and len(values) == len(study.directions):
            storage.set_trial_user_attr(trial_id, "status", "ok")
            study.tell(number, [float(v) for v in values])
        else:
            storage.set_trial_user_attr(trial_id, "status", status if status != "ok" else "failed")
            if status == "ok":
                storage.set_trial_user_attr(trial_id, "error",
                                            f"objective values {values} are not finite numbers")
            study.tell(number, state=optuna.trial.TrialState.FAIL)

    @staticmethod
    def _best_line(study: optuna.Study, names: list[str]) -> str:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            return "no finished trial yet"
        if len(study.directions) > 1:
            return f"Pareto front of {', '.join(names)}: {len(study.best_trials)} trials"
        best = study.best_trial
        return f"best {names[0]} {best.value:.4f} (trial {best.number})"

