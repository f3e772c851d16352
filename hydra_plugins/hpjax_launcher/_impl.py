"""The vmap launcher's work: compose a batch's jobs, hand them to hpjax, end each under Hydra.

hpjax trains the batch as populations (`hpjax.engine.train_jobs`); each job then runs under Hydra's
`run_job` (job directory, `.hydra/` files, callbacks) with its `hpjax.engine.JobEnd` as the task
function, which writes what the population computed for it. A task function other than
hpjax's own runs one job after another, as Hydra's basic launcher does.
"""

import copy
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import hpjax.engine
from hpjax.engine import Scheduler

from . import _fast, _jobfiles
from ._compose import install as install_fast_sweep_configs

log = logging.getLogger(__name__)

# A batch of more jobs than this logs its jobs' lines (overrides, result) to each job's log file
# only, not to the terminal: the terminal gets one line per population and the sweep's progress.
PER_TRIAL_LINES = 20


class _FileOnly(logging.Filter):
    """Keeps INFO records of hpjax (a job's result line) off a terminal handler; warnings and
    errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("hpjax")


def _off_console(end: Any) -> Any:
    """The job's task function with its INFO lines in its log file only: Hydra sets up the
    job's logging (terminal and file) just before calling it."""

    def task(cfg: DictConfig) -> Any:
        handlers = [h for h in logging.root.handlers if type(h) is logging.StreamHandler]
        only = _FileOnly()
        for h in handlers:
            h.addFilter(only)
        try:
            return end(cfg)
        finally:
            for h in handlers:
                h.removeFilter(only)

    return task


class LoggingStates:
    """Hydra's logging configs (the sweep's, the jobs' of a template) applied by `configure_log`
    the first time, and after that by putting back the root logger's handlers and level it set,
    while nothing but the jobs' log files (`_jobfiles.JobLogFiles`) changed them since: a batch
    switches three times (`logging.config.dictConfig`: milliseconds each)."""

    def __init__(self) -> None:
        self._states: dict = {}  # key -> (root handlers, level) that configure_log left
        self._left: Optional[tuple] = None  # (handlers, level) as `apply` last left the root

    def apply(self, key: Any, log_config: Any, verbose: Any) -> None:
        root = logging.getLogger()
        state = self._states.get(key)
        if state is not None and self._unchanged(root):
            kept = {id(h) for s in self._states.values() for h in s[0]}
            for h in root.handlers:  # a job's own log file (JobLogFiles moved it there)
                if id(h) not in kept:
                    h.close()
            root.handlers[:] = state[0]
            root.setLevel(state[1])
        else:
            configure_log(log_config, verbose)
            state = (tuple(root.handlers), root.level)
            # Not kept: a config that disables other loggers or sets levels (dictConfig does it
            # again each time), or a file not opened to append to (the next dictConfig closes
            # it; put back, it would open again where it was).
            if not verbose and log_config is not None and OmegaConf.select(
                    log_config, "disable_existing_loggers", default=True) is False and all(
                    h.mode == "a" for h in state[0] if isinstance(h, logging.FileHandler)):
                self._states[key] = state
        self._left = state

    def _unchanged(self, root: logging.Logger) -> bool:
        if self._left is None or root.level != self._left[1] or len(
                root.handlers) != len(self._left[0]):
            return False
        return all(a is b or isinstance(a, logging.FileHandler) and isinstance(
            b, logging.FileHandler) for a, b in zip(root.handlers, self._left[0], strict=True))


class VmapLauncherImpl:
    def __init__(self, max_population: int, memory_budget_mb: Optional[int]) -> None:
        if max_population < 1:
            raise ValueError(f"hydra.launcher.max_population={max_population}: must be >= 1")
        self.max_population, self.memory_budget_mb = max_population, memory_budget_mb
        self.name = "vmap"  # the launcher recorded in result.json
        self.progress: Any = None  # hpjax's default live display
        self.quiet = False  # the jobs now ending log to their files only
        self._templates: Optional[_fast.Templates] = None
        self._file_only = _FileOnly()
        self._logging = LoggingStates()
        self._preflight = False  # the first batch's check is still to run (`preflight`)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        if hpjax.engine.is_task(task_function):  # compose jobs once per set of group choices
            install_fast_sweep_configs(hydra_context.config_loader)
        # hpjax's sweeper checks its whole space before its study exists; Hydra's own (basic)
        # and other sweepers do not: the first batch is checked here (`preflight`)
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
        self._preflight = hpjax.engine.is_task(task_function) and not sweeper.startswith(
            "hydra_plugins.hpjax_sweeper.")

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        indexed = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        if not hpjax.engine.is_task(self.task_function):
            self._start()
            return [self._run_job(n, o, self._compose(n, o), self.task_function)
                    for n, o in indexed]
        self.preflight(indexed)
        from ._interrupt import launch  # SIGINT/SIGTERM at epoch boundaries, a rerun resumes

        return launch(self, indexed)

    def preflight(self, indexed: list[tuple[int, list]]) -> None:
        """Under a sweeper other than hpjax's (Hydra's basic sweeper), once, before the first
        batch trains or writes a job directory: the first job of each set of group choices
        (`data=mnist1d,iris`: one each) composed and validated, as hpjax's sweeper checks its
        space. What would fail every trial of those choices (a chosen option whose package is
        missing, a data path that cannot be read, a `_target_` that does not import, any value
        the config refuses) stops the sweep with one line and exit code 2, instead of failing
        each trial (exit code 4). A later job's own bad value fails that trial alone."""
        if not self._preflight:
            return
        self._preflight = False
        self._refuse_another_sweep(indexed)
        exists = self.hydra_context.config_loader.repository.group_exists
        groups: dict[str, bool] = {}

        def is_group(line: str) -> bool:
            key = line.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
            if key not in groups:
                groups[key] = not key.startswith("hydra") and bool(exists(key))
            return groups[key]

        first: dict[tuple, tuple[int, list]] = {}
        for n, overrides in indexed:
            first.setdefault(tuple(o for o in overrides if is_group(o)), (n, overrides))
        for n, overrides in first.values():
            task = self._compose(n, overrides)
            with read_write(task), open_dict(task):
                del task["hydra"]
            try:
                hpjax.validate(task)
            except hpjax.ConfigError as e:
                hpjax.engine.stop(str(e))

    def _refuse_another_sweep(self, indexed: list[tuple[int, list]]) -> None:
        """A sweep directory holds one sweep: a job directory of this batch's numbers that ran
        other overrides (the same `hydra.sweep.dir` given to another grid) stops the sweep with
        one line and exit code 2, where Hydra's sweeper would overwrite some of its jobs and
        the report mix the rest with this sweep's. The same command again is no mix: its jobs
        run again (or, interrupted, resume)."""
        sweep = self.config.hydra.sweep
        if OmegaConf.to_container(sweep, resolve=False).get("subdir") != "${hydra.job.num}":
            return  # job directories named otherwise: not compared
        sweep_dir = Path(str(sweep.dir))
        for n, overrides in indexed:
            saved = sweep_dir / str(n) / ".hydra" / "overrides.yaml"
            if not saved.is_file():
                continue
            try:
                ran = [str(o) for o in OmegaConf.load(saved)]
            except Exception:  # noqa: BLE001  (unreadable: not a job this sweep can keep)
                ran = [f"(unreadable {saved.name})"]
            if ran != list(overrides):
                hpjax.engine.stop(
                    f"hydra.sweep.dir={sweep_dir} holds the jobs of another sweep (job {n} ran "
                    f"{' '.join(ran) or 'no overrides'}; this sweep's job {n} is "
                    f"{' '.join(overrides) or 'no overrides'}): its trials would mix with this "
                    "sweep's; pick another hydra.sweep.dir, or move that one away")

    def _start(self) -> None:
        setup_globals()
        self._logging.apply("hydra", self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def _compose(self, index: int, overrides: list) -> DictConfig:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = index
            sweep_config.hydra.job.num = index
        return sweep_config

    def _sweep_progress(self) -> Any:
        """hpjax's display; without a terminal, its per-epoch lines go to the sweep's
        `populations.log`."""
        if self.progress is None:
            self.progress = hpjax.engine.SweepProgress(log_file=os.path.join(
                str(self.config.hydra.sweep.dir), "populations.log"))
        return self.progress

    def _job(self, index: int, sweep_config: DictConfig) -> "hpjax.engine.Job":
        output_dir = str(Path(str(sweep_config.hydra.sweep.dir)) / str(
            sweep_config.hydra.sweep.subdir))
        task_cfg = copy.deepcopy(sweep_config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        try:
            return hpjax.engine.Job(hpjax.validate(task_cfg), output_dir, name=f"trial {index}")
        except hpjax.ConfigError as e:
            return hpjax.engine.Job(None, output_dir, name=f"trial {index}", error=e)

    def _run_job(self, index: int, overrides: list, sweep_config: DictConfig,
                 task_function: TaskFunction) -> JobReturn:
        if not self.quiet:
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
        ret = run_job(hydra_context=self.hydra_context, task_function=task_function,
                      config=sweep_config, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def units(self, indexed: list[tuple[int, list]]) -> tuple[list[list[tuple[int, list]]],
                                                               dict[int, Any]]:
        """The jobs (job number, overrides) in the units they train in: one per population
        chunk; a job whose config is bad is a unit of its own, and the jobs whose program cannot
        be built are one unit (where each fails with its error, without training). And each
        job's validated config by job number (None: a bad one)."""
        self._start()
        cfgs = [self._job(n, self._compose(n, o)).cfg for n, o in indexed]
        failed: dict = {}
        planned = hpjax.engine.plan(cfgs, max_population=self.max_population,
                                    memory_budget_mb=self.memory_budget_mb, failed=failed)
        planned.append([sorted(failed)] if failed else [])
        units = [[indexed[i]] for i, cfg in enumerate(cfgs) if cfg is None]
        units += [[indexed[i] for i in chunk] for chunks in planned for chunk in chunks]
        return sorted(units), {n: cfg for (n, _), cfg in zip(indexed, cfgs, strict=True)}

    def run_jobs(self, indexed: list[tuple[int, list]]) -> list[JobReturn]:
        """Trains jobs given as (job number, overrides) as populations, each trial to its end."""
        return self.run_populations(indexed, None, None)

    def run_populations(self, jobs: Sequence[tuple[int, Sequence[str]]],
                        scheduler: Optional[Scheduler],
                        on_result: Optional[Callable[[int, JobReturn], None]],
                        on_paused: Optional[Callable[[int], None]] = None) -> list[JobReturn]:
        """Trains jobs given as (job number, overrides) as populations driven by `scheduler`
        (its trials are the job numbers), then ends each under Hydra's `run_job` (or as `_fast`
        ends it, with the same files), calling `on_result(job number, JobReturn)` as each
        ends. A scheduler that refills gives (job number, (job number, overrides)) pairs;
        their returns follow the batch's. With `on_paused`, the scheduler also waits for trials
        trained elsewhere (a bracket trained rung by rung, `hpjax_submitit`): once all the
        batch's populations wait, they suspend (`hpjax.engine.train_jobs`), and each trial that
        waits is ended as a stop there would end it and named to `on_paused`, not `on_result`."""
        indexed = [(n, list(o)) for n, o in jobs]
        self._start()
        hpjax.enable_compilation_cache()
        refills = scheduler is not None and scheduler.refills
        fast = None if refills else self._fast_jobs(indexed)
        if fast is not None:
            return self._run_fast(fast, scheduler, on_result, on_paused)
        configs = [self._compose(n, o) for n, o in indexed]
        jobs_ = [self._job(n, c) for (n, _), c in zip(indexed, configs, strict=True)]
        returns: dict[int, JobReturn] = {}
        quiet = len(indexed) > PER_TRIAL_LINES

        def new_job(payload: tuple) -> Any:
            number, overrides = payload
            indexed.append((number, list(overrides)))
            configs.append(self._compose(number, list(overrides)))
            return self._job(number, configs[-1])

        def end_jobs(ended: dict) -> None:  # each population's files as soon as it ends
            for i, end in sorted(ended.items()):
                (n, o), c = indexed[i], configs[i]
                returns[i] = self._run_job(n, o, c, _off_console(end) if quiet else end)
                if end.paused and on_paused is not None:
                    on_paused(n)
                elif on_result is not None:
                    on_result(n, returns[i])

        self.quiet = quiet
        try:
            hpjax.engine.train_jobs(jobs_, launcher=self.name,
                                    max_population=self.max_population,
                                    memory_budget_mb=self.memory_budget_mb,
                                    progress=self._sweep_progress(), scheduler=scheduler,
                                    trials=[n for n, _ in indexed], new_job=new_job,
                                    on_ended=end_jobs, suspend=on_paused is not None)
        finally:
            self.quiet = False
        return [returns[i] for i in range(len(indexed))]

    # -- the fast path: one composition per template (`_fast`) -----------------------------------
    def _fast_jobs(self, indexed: list[tuple[int, list]]) -> Optional[list]:
        """The batch's jobs composed from templates, whichever sweeper asked; None where Hydra's
        path must run them (a callback that reads each job's config; a refilled batch does not
        ask)."""
        if wants_jobs(self.hydra_context.callbacks):
            return None
        if self._templates is None:
            loader = self.hydra_context.config_loader
            self._templates = _fast.Templates(self._compose, hpjax.validate,
                                              loader.repository.group_exists)
        try:
            return [self._templates.job(n, o) for n, o in indexed]
        except _fast.Ineligible as e:
            log.debug("the batch runs Hydra's run_job: %s", e)
            return None

    def _run_fast(self, fast: list, scheduler: Optional[Scheduler] = None,
                  on_result: Optional[Callable[[int, JobReturn], None]] = None,
                  on_paused: Optional[Callable[[int], None]] = None) -> list[JobReturn]:
        """Trains templated jobs and ends each with its files, written by a `Writer` thread
        (flushed before the sweeper sees a return: `on_result`, the batch's end)."""
        jobs = [hpjax.engine.Job(j.cfg, j.output_dir, name=f"trial {j.index}") for j in fast]
        if len(fast) <= PER_TRIAL_LINES:  # a small batch names its jobs, as Hydra's path does
            for j in fast:
                log.info("\t#%d : %s", j.index, " ".join(filter_overrides(j.overrides)))
        returns: dict[int, JobReturn] = {}
        logs: list = []  # the jobs' log files, set up at the first job that ends
        cwd = os.getcwd()  # every job's working_dir (the jobs do not change directory)

        def written(writer: Any) -> None:  # a job whose files failed to write fails
            for i, error in writer.flush().items():
                if i in returns and returns[i].status == JobStatus.FAILED:
                    continue  # its first error, the cause (a checkpoint on a full disk)
                returns[i] = _jobfiles.job_return(fast[i], JobStatus.FAILED, error, None, cwd)

        def end_jobs(ended: dict) -> None:
            for i, end in sorted(ended.items()):
                if not logs:
                    logs.append(self._job_logging(fast[i], writer))
                writer.tag = i
                returns[i] = self._end_fast(fast[i], end, logs[0], writer, cwd)
                if end.paused and on_paused is not None:
                    on_paused(fast[i].index)
            writer.tag = None
            told = [i for i in sorted(ended) if not (ended[i].paused and on_paused is not None)]
            if on_result is not None and told:
                written(writer)
                for i in told:
                    on_result(fast[i].index, returns[i])

        self.quiet = True
        try:
            with hpjax.engine.background_writes() as writer:
                hpjax.engine.train_jobs(jobs, launcher=self.name,
                                        max_population=self.max_population,
                                        memory_budget_mb=self.memory_budget_mb,
                                        progress=self._sweep_progress(), scheduler=scheduler,
                                        trials=[j.index for j in fast], on_ended=end_jobs,
                                        suspend=on_paused is not None)
                written(writer)
        finally:
            self.quiet = False
            for h in logging.root.handlers:
                h.removeFilter(self._file_only)
            if logs:
                self._logging.apply("hydra", self.config.hydra.hydra_logging,
                                    self.config.hydra.verbose)
        return [returns[i] for i in range(len(fast))]

    def _job_logging(self, job: "_fast.FastJob", writer: Any) -> "_jobfiles.JobLogFiles":
        """Hydra's job logging, configured once for the batch; each job gets its own file."""
        from hydra.core.hydra_config import HydraConfig

        template = job.template
        config = template.job
        first = config.hydra.runtime.output_dir
        os.makedirs(first, exist_ok=True)
        saved = HydraConfig.instance().cfg
        if template.hydra_config is None:  # its masked copy: tens of ms, once per template
            HydraConfig.instance().set_config(config)
            template.hydra_config = HydraConfig.instance().cfg
        HydraConfig.instance().cfg = template.hydra_config
        try:
            self._logging.apply(("jobs", id(template)), config.hydra.job_logging,
                                config.hydra.verbose)
        finally:
            HydraConfig.instance().cfg = saved
        for h in logging.root.handlers:  # the jobs' INFO lines go to their files only
            if type(h) is logging.StreamHandler:
                h.addFilter(self._file_only)
        return _jobfiles.JobLogFiles(first, writer)

    def _end_fast(self, job: "_fast.FastJob", end: Any, logs: "_jobfiles.JobLogFiles",
                  writer: Any = None, cwd: Optional[str] = None) -> JobReturn:
        """What run_job does for a job, with its files from the template (written by `writer`
        where there is one)."""
        _jobfiles.write_hydra_files(job, job.template.output_subdir, writer)  # and the directory
        logs.move(job.output_dir)
        try:
            value = end.finish(job.output_dir, job.cfg.objective.metric, job.cfg.objective.mode)
            status = JobStatus.COMPLETED
        except Exception as e:  # as run_job: the job fails, the sweep goes on
            value, status = e, JobStatus.FAILED
        ok = end.crash is None and end.error is None and end.outcome is not None
        return _jobfiles.job_return(job, status, value, end.outcome.result if ok else None, cwd)


def wants_jobs(callbacks: Any) -> bool:
    """Whether a callback has its own `on_job_start`/`on_job_end` (they need each job's
    composed config) and has not said it ignores this sweep's jobs (`wants_jobs = False`)."""
    from hydra.experimental.callback import Callback

    for c in getattr(callbacks, "callbacks", ()):
        own = any(getattr(type(c), name, None) is not getattr(Callback, name)
                  for name in ("on_job_start", "on_job_end"))
        if own and getattr(c, "wants_jobs", True):
            return True
    return False
