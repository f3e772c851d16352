"""The sweep: ask a batch of trials, launch it, tell each trial's result, until the study has
`n_trials` finished trials (counted across every worker on the study)."""

import contextlib
import functools
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

import hpjax.engine

from . import _attrs, _batch, _bulk, _checks, _faults, _fidelity, _search, _storage

log = logging.getLogger(__name__)

MODES = ("min", "max")
_FINAL_FAIL = _batch.FINAL_FAIL


def optuna_direction(mode: str) -> str:
    """hpjax's objective mode (min, max) as Optuna names it: the one place they meet."""
    return {"min": "minimize", "max": "maximize"}[mode]


class HpjaxSweeperImpl(Sweeper):
    def __init__(self, algorithm: str, n_trials: Optional[int], batch_size: int, seed: int,
                 params: Optional[dict], storage: Optional[str], study_name: str,
                 objectives: Optional[list], direction: Optional[str],
                 fail_stale_trials: bool, heartbeat_interval: Optional[int] = None,
                 grace_period: Optional[int] = None, max_retries: int = 2,
                 poll_s: float = 2.0, sampler: Optional[str] = None, eta: int = 3,
                 min_epochs: int = 1, pruner: Any = None, pbt: Any = None) -> None:
        _check(algorithm, n_trials, batch_size, direction, heartbeat_interval)
        _fidelity.check(algorithm, pruner, eta, min_epochs)
        self.sampler, self.eta, self.min_epochs, self.pruner = sampler, eta, min_epochs, pruner
        self.pbt = {"interval": 4, "fraction": 0.25, "resample_probability": 0.25,
                    **dict(pbt or {})}
        self.algorithm, self.n_trials, self.batch_size, self.seed = (
            algorithm, n_trials, batch_size, seed)
        self.params = dict(params or {})
        self.storage, self.study_name = storage, study_name
        self.objectives = hpjax.engine.parse_objectives(objectives or [])
        self.direction, self.fail_stale_trials = direction, fail_stale_trials
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or (2 * heartbeat_interval if heartbeat_interval
                                             else None)
        self.max_retries, self.poll_s = max_retries, poll_s
        self.config: Optional[DictConfig] = None
        self._grid: Optional[list] = None  # the grid's points, made at the first enqueue

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.task_function, self.conditional = task_function, False
        _storage.hide_password(config, self.storage)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- the study -------------------------------------------------------------------------
    def _modes(self) -> tuple[list[str], list[str]]:
        """Objective names (empty: the task's return value) and their modes (min, max): the
        sweeper's objectives, else its direction, else the app's `objective.mode`."""
        if self.objectives:
            return list(self.objectives), list(self.objectives.values())
        if self.direction is not None:
            return [], [self.direction]
        mode = OmegaConf.select(self.config, "objective.mode", default=None) or "min"
        if mode not in MODES:
            raise ValueError(f"objective.mode={mode!r}: must be min or max (or set "
                             "hydra.sweeper.direction=min|max)")
        return [], [mode]

    def _study(self, sweep_dir: Path, directions: list[str]) -> optuna.Study:
        url = _storage.storage_url(self.storage, sweep_dir)
        study, worker = _storage.open_study(
            url, self.study_name, directions, self._sampler(0, len(directions)), sweep_dir,
            heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period,
            on_stale=functools.partial(_faults.retry, max_retries=self.max_retries))
        if worker and self.seed is not None:
            # Workers of one study with one seed would propose the same points: each worker
            # after the first draws from seed + its number (a sweep on its own is worker 0).
            study.sampler = self._sampler(worker, len(directions))
            log.info("worker %d of study %r: sampler seed %d", worker, self.study_name,
                     self.seed + worker)
        log.info("study %r in %s (%s, %s)", self.study_name, _storage.safe_url(url),
                 self.algorithm, ", ".join(directions))
        return study

    def _proposer(self) -> str:
        """The algorithm whose sampler proposes the trials."""
        return (self.sampler or "random") if self.algorithm in _fidelity.OWN_SAMPLER \
            else self.algorithm

    def _sampler(self, worker: int, n_objectives: int) -> Any:
        seed = None if self.seed is None else self.seed + worker
        # The sampler is the preset's choice, not the user's code: Optuna's "experimental"
        # notice (QMCSampler, GPSampler) asks nothing of the user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _search.make_sampler(self._proposer(), seed=seed, n_objectives=n_objectives,
                                        batch_size=self.batch_size,
                                        conditional=self.conditional)

    # -- what the multi-fidelity code calls (`_fidelity.Sweep`) -----------------------------
    def lock(self, sweep_dir: Path) -> contextlib.AbstractContextManager[None]:
        """One worker at a time on the study (`_storage.study_lock`)."""
        return _storage.study_lock(_storage.storage_url(self.storage, sweep_dir),
                                   self.study_name, sweep_dir)

    def _fail_stale(self, study: optuna.Study) -> None:
        _faults.fail_stale(study, heartbeats=bool(self.heartbeat_interval),
                           tell=self._tell_result, max_retries=self.max_retries,
                           grace_period=self.grace_period)

    @staticmethod
    def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The trials that count toward n_trials."""
        return _batch.finished_trials(study)

    def compose(self, overrides: list[str]) -> DictConfig:
        """A job's config as the launcher will compose it, with these overrides."""
        return self.hydra_context.config_loader.load_sweep_config(self.config, overrides)

    def _enqueue_grid(self, study: optuna.Study, space: _search.SearchSpace,
                      room: Optional[int] = None) -> int:
        """The grid's size (at most n_trials); given `room`, enqueues its next points not yet
        finished, running or waiting until `room` wait: a grid of a million points is enqueued
        a batch at a time, not all before the first trial."""
        if self._grid is None:
            self._grid, self._grid_next = space.grid(), 0
        points = self._grid
        total = len(points) if self.n_trials is None else min(self.n_trials, len(points))
        if room is None:
            return total
        waiting = _storage.fresh_trials(study, (TrialState.WAITING,))
        need = room - len(waiting)
        if need <= 0:
            return total
        key = lambda params: tuple(sorted(params.items()))
        taken = {key(t.params) for t in self.finished(study)}
        taken |= {key(t.params) for t in _storage.fresh_trials(study, (TrialState.RUNNING,))}
        taken |= {key(t.system_attrs.get("fixed_params", {})) for t in waiting}
        while need > 0 and self._grid_next < total:
            point = points[self._grid_next]
            self._grid_next += 1
            if key(point) not in taken:
                study.enqueue_trial(point)
                need -= 1
        return total

    # -- the sweep -------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        _quiet_optuna()
        sweep_dir = Path(self.config.hydra.sweep.dir)
        names, modes = self._modes()
        space = _checks.before_writing(  # exits 2 in one line: nothing is written
            params=self.params, arguments=arguments, algorithm=self.algorithm,
            hydra_context=self.hydra_context, config=self.config,
            task_function=self.task_function, storage=self.storage,
            study_name=self.study_name, sweep_dir=sweep_dir,
            directions=[optuna_direction(m) for m in modes], sampler=self._proposer())
        self.conditional = space.conditional
        try:  # the study, its configs and results: the user's only
            sweep_dir.mkdir(parents=True)
            os.chmod(sweep_dir, 0o700)
        except FileExistsError:  # a rerun, or another worker made it
            pass
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._study(sweep_dir, [optuna_direction(m) for m in modes])
        _storage.remember(study, self.algorithm, _checks.shown(space))
        _storage.claim_owner(sweep_dir, _storage.owner_of(self.storage, self.study_name))
        total, distributions = self._prepare(study, sweep_dir, space)
        log.info("%s", _checks.describe(space, arguments, self.config, total, self.algorithm))
        names = names or [OmegaConf.select(self.config, "objective.metric",
                                           default="objective")]
        _attrs.name_metrics(study, names)
        if self.algorithm in _fidelity.BRACKETS:
            return _fidelity.sweep_brackets(self, study, sweep_dir, space, names, modes[0])
        if self.algorithm == "pbt":
            return _fidelity.sweep_pbt(self, study, sweep_dir, space, modes[0])
        pruning = self._pruning(study, space, modes)
        returns: list[Sequence[JobReturn]] = []
        start, waiting, milestones = time.perf_counter(), False, _batch.Milestones()
        while True:
            hpjax.engine.check_interrupt()  # a signal between batches stops before the next one
            trials, finished, running = self._claim(study, sweep_dir, space, total,
                                                    distributions)
            if not trials:
                if finished >= total:
                    return returns
                if not waiting:  # other workers run the rest: wait in case one of them dies
                    log.info("[study] %d/%d trials finished, %d running in other workers: "
                             "waiting", finished, total, running)
                waiting = True
                time.sleep(self.poll_s)
                continue
            waiting = False
            if pruning:
                scheduler, on_result = _fidelity.pruning(self, study, sweep_dir, space, total,
                                                         distributions, trials)
                returns.append(self.run_batch(study, trials, space, scheduler, on_result))
            else:
                returns.append(self.run_batch(study, trials, space))
            finished = _batch.count(study)[0]
            if milestones.due(finished, total):
                log.info("[study] %d/%d trials finished, %s, %.1f s %s", finished, total,
                         _batch.best_line(study, names), time.perf_counter() - start,
                         _batch.bar(finished, total))

    def _pruning(self, study: optuna.Study, space: _search.SearchSpace,
                 modes: list[str]) -> bool:
        """With a pruner: the study's pruner set (each batch then gets its scheduler)."""
        if self.pruner in (None, "none"):
            return False
        if len(modes) > 1:
            raise ValueError("hydra.sweeper.pruner prunes on one objective; several were given")
        _fidelity.population_launcher(self.launcher, "hydra.sweeper.pruner", live=True)
        top = _fidelity.max_epochs(self, space)
        study.pruner = _fidelity.make_pruner(self.pruner, eta=self.eta,
                                             min_epochs=self.min_epochs, max_epochs=top)
        return True

    def _prepare(self, study: optuna.Study, sweep_dir: Path,
                space: _search.SearchSpace) -> tuple[int, dict]:
        """The study's size and distributions; fails what a killed sweep left running."""
        with self.lock(sweep_dir):
            if self.fail_stale_trials or self.heartbeat_interval:
                self._fail_stale(study)
            if self.algorithm == "grid":
                total, distributions = self._enqueue_grid(study, space), space.grid_distributions
            else:
                total, distributions = self.n_trials, space.distributions
            if total is None:  # sha, hyperband: their brackets' trials
                total = _fidelity.bracket_plan(self, space)[2]
            finished = _batch.count(study)[0]
        if finished:
            log.info("resuming: %d of %d trials already finished", finished, total)
        return total, distributions

    def _claim(self, study: optuna.Study, sweep_dir: Path, space: _search.SearchSpace,
               total: int, distributions: dict) -> tuple[list, int, int]:
        """Asks the next batch of trials, as many as the study still lacks: (trials, finished,
        running elsewhere)."""
        with self.lock(sweep_dir):
            if self.heartbeat_interval:
                self._fail_stale(study)
            finished, running = _batch.count(study)
            room = min(self.batch_size, total - finished - running)
            if self.algorithm == "grid":
                self._enqueue_grid(study, space, room)
            return self.ask(study, sweep_dir, space, distributions, room), finished, running

    def ask(self, study: optuna.Study, sweep_dir: Path, space: _search.SearchSpace,
            distributions: dict, n: int) -> list[optuna.Trial]:
        """`n` new trials, with their job directories and first heartbeats (a worker killed
        after this leaves them stale, to be run again), written at once."""
        _checks.refuse_foreign(study, distributions)  # before any is asked
        job_dir = self.job_dir(sweep_dir)
        attrs = (lambda number: {"job_dir": str(job_dir(number))}) if job_dir else (lambda _: {})
        if n > 0 and _bulk.applies(study):
            trials = _bulk.ask(study, n, lambda s: space.ask(s, distributions), attrs,
                               heartbeat=_faults.optuna_heartbeats(study))
        else:
            with _batch.transaction(study), _batch.asking(study):
                trials = [space.ask(study, distributions) for _ in range(max(n, 0))]
                for t in trials:
                    for key, value in attrs(t.number).items():
                        t.set_user_attr(key, value)
                _faults.first_heartbeats(study, trials)
        return trials

    def job_dir(self, sweep_dir: Path) -> Optional[Callable[[int], Path]]:
        """Trial number -> job directory, where the default `hydra.sweep.subdir` is in use."""
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        root = sweep_dir.resolve()  # absolute: a rerun from another directory finds it
        return (lambda n: root / str(n)) if subdir == "${hydra.job.num}" else None

    def run_batch(self, study: optuna.Study, trials: list, space: _search.SearchSpace,
                  scheduler: Optional["hpjax.engine.Scheduler"] = None,
                  on_result: Optional["_fidelity.TellAsTheyEnd"] = None) -> list[JobReturn]:
        """Launches the trials (with a scheduler: as populations it drives, `on_result` told
        each job as it ends, its `told` the trials told that way) and tells their results."""
        batch = [space.overrides(t.params) for t in trials]
        if not hpjax.engine.composes_batch_first(self.launcher):  # else the launcher checks
            self.validate_batch_is_legal(batch)
        _faults.carry_checkpoints(trials)
        with _faults.none_left_running(study, trials, self.max_retries, self._tell_result):
            with _faults.heartbeats(study, trials, self.heartbeat_interval):
                results = self._launch(batch, [t.number for t in trials], scheduler, on_result)
            self._tell_batch(study, trials, results, () if on_result is None else on_result.told)
        _faults.disk_full(study, trials, self.max_retries)
        return _batch.slim(results)

    def _tell_batch(self, study: optuna.Study, trials: list, results: list,
                    told: Any = ()) -> None:
        """Tells a batch's results (but those `told` as their jobs ended): in bulk where the
        study allows (`_bulk`), else in one transaction; one by one if a write is refused (a
        trial another worker marked failed meanwhile: it is skipped, with a warning)."""
        pending = [(t, r) for t, r in zip(trials, results, strict=True) if t.number not in told]
        if _bulk.tells_in_bulk(study):
            outcomes = [(t, self._outcome(study, t, r)) for t, r in pending]
            refused = set(_bulk.tell(study, [o for _, o in outcomes if o.state != PRUNED]))
            for t, o in outcomes:
                if o.trial_id in refused:
                    _warn_refused(t.number)
            pending = [(t, r) for (t, r), (_, o) in zip(pending, outcomes, strict=True)
                       if o.state == PRUNED]
        try:
            with _batch.transaction(study):
                self._tell_each(study, pending)
        except optuna.exceptions.StorageInternalError:
            self._tell_each(study, pending)

    def _tell_each(self, study: optuna.Study, pending: list) -> None:
        for trial, ret in pending:
            try:
                self.tell(study, trial, ret)
            except optuna.exceptions.UpdateFinishedTrialError:
                _warn_refused(trial.number)

    def _launch(self, batch: list[list[str]], numbers: list[int], scheduler: Any = None,
                on_result: Any = None) -> list[JobReturn]:
        # Job directory = trial number, so a resumed sweep never overwrites an earlier trial's.
        if scheduler is not None:  # populations it drives; refilled trials' returns after
            return list(self.launcher.run_populations(list(zip(numbers, batch, strict=True)),
                                                      scheduler, on_result))
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        return [r for overrides, n in zip(batch, numbers, strict=True)
                for r in self.launcher.launch([overrides], initial_job_idx=n)]

    # -- telling results ---------------------------------------------------------------------
    def tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        _bulk.apply(study, self._outcome(study, trial, ret))

    def _outcome(self, study: optuna.Study, trial: optuna.Trial,
                 ret: JobReturn) -> _bulk.Outcome:
        """What the study keeps of a job: its state and values, objective per epoch, and user
        attributes (status, error, test metrics, job directory where it moved)."""
        output_dir = getattr(ret, "output_dir", None)  # the vmap launcher's light returns
        if output_dir is None and ret.hydra_cfg is not None:
            output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
        attrs = {}
        if output_dir and str(output_dir) != trial.user_attrs.get("job_dir"):  # (it moved)
            attrs["job_dir"] = str(output_dir)
        trial_id = _storage.trial_id(study, trial)
        if ret.status != JobStatus.COMPLETED:
            exception = _bulk.job_error(ret)  # its type and message (and file)
            error = f"{type(exception).__name__}: {exception}"
            log.warning("trial %d failed: %s", trial.number, error)
            # a full or read-only disk: not the trial's fault, it runs again (_faults.disk_full)
            status = "disk" if hpjax.engine.disk_fault(exception) else "failed"
            return _bulk.Outcome(trial_id, TrialState.FAIL, user_attrs={
                **attrs, "status": status, "error": error[:500]})
        result = getattr(ret, "result", None) or (hpjax.engine.read_result(output_dir) if output_dir
                                                  else None)
        if result is None:  # a task function of its own: its return value is the objective
            value = ret.return_value
            return _bulk.final(study, trial_id, "ok", list(value) if isinstance(
                value, (list, tuple)) else [value], user_attrs=attrs)
        intermediate, more = _attrs.of_result(study, trial_id, result, output_dir)
        outcome = self._result_outcome(study, trial_id, result)
        outcome.intermediate, outcome.user_attrs = intermediate, {**attrs, **more,
                                                                  **outcome.user_attrs}
        return outcome

    def _result_outcome(self, study: optuna.Study, trial_id: int,
                        result: "hpjax.Result") -> _bulk.Outcome:
        values = ([result.metric(n) for n in self.objectives] if self.objectives
                  else [result.objective])
        attrs = {"error": result.error[:500]} if result.error else {}
        return _bulk.final(study, trial_id, result.status, values, user_attrs=attrs)

    def _tell_result(self, study: optuna.Study, trial_id: int, result: "hpjax.Result") -> None:
        """Tells a trial's result.json: the sweeper's objectives, else the trial's own."""
        _bulk.apply(study, self._result_outcome(study, trial_id, result))


PRUNED = _bulk.PRUNED


def _warn_refused(number: int) -> None:
    log.warning("trial %d was marked failed by another worker while it ran (two workers on one "
                "study need heartbeat_interval, or fail_stale_trials=false): its result is not "
                "told", number)


def _check(algorithm: str, n_trials: Optional[int], batch_size: int, direction: Optional[str],
           heartbeat_interval: Optional[int]) -> None:
    """Rejects a bad `hydra.sweeper` value, saying which and what is allowed."""
    if algorithm not in _search.ALGORITHMS:
        raise ValueError(f"hydra.sweeper.algorithm={algorithm!r}: must be one of "
                         f"{', '.join(_search.ALGORITHMS)}")
    if n_trials is None and algorithm not in ("grid", *_fidelity.BRACKETS):
        raise ValueError(f"hydra.sweeper.n_trials=null is only allowed with algorithm=grid, "
                         f"sha or hyperband; set a number of trials for algorithm={algorithm}")
    if n_trials is not None and n_trials < 1:
        raise ValueError(f"hydra.sweeper.n_trials={n_trials}: must be >= 1 (or null for grid)")
    if batch_size < 1:
        raise ValueError(f"hydra.sweeper.batch_size={batch_size}: must be >= 1")
    if direction is not None and direction not in MODES:
        raise ValueError(f"hydra.sweeper.direction={direction!r}: must be min or max (or null: "
                         "the app's objective.mode)")
    if heartbeat_interval is not None and heartbeat_interval < 1:
        raise ValueError(f"hydra.sweeper.heartbeat_interval={heartbeat_interval}: must be "
                         ">= 1 second, or null (off)")


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats are "experimental" in Optuna and "meant for Study.optimize": this sweeper
    # records them for its batches (`_faults.heartbeats`) as optimize does for its trial.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                            module="optuna")
    warnings.filterwarnings("ignore", ".*heartbeat.*", optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with")
