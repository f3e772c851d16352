import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import jax
import numpy as np
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

from hpjax import data as data_lib
from hpjax import engine, train
from hpjax.app import record_failure, train_task
from hpjax.config import Config, ConfigError, to_config
from hpjax.hparams import hparams, signature
from hpjax.progress import SweepProgress

from ._compose import install as install_fast_sweep_configs

log = logging.getLogger(__name__)


def _is_out_of_memory(error: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


@dataclass
class Job:
    index: int
    overrides: list
    sweep_config: DictConfig
    output_dir: str = ""  # the job's directory, as run_job will make it
    cfg: Optional[Config] = None
    error: Optional[ConfigError] = None
    crash: Optional[BaseException] = None  # raised again in the job, as the basic launcher would
    outcome: Optional[engine.Outcome] = None


@dataclass
class Group:
    """Jobs that share a static signature: they train as one population (in chunks)."""

    jobs: list = field(default_factory=list)

    @property
    def cfg(self) -> Config:
        return self.jobs[0].cfg

    def describe(self) -> str:
        c = self.cfg
        width = getattr(c.model, "width", "")
        return (f"{c.data.name}, {c.model.name} {width}, {c.optimizer.name}, {c.schedule.name}, "
                f"batch {c.train.batch_size}, {c.train.epochs} epochs")


def member_bytes(cfg: Config, num_params: int, input_size: int, samples: int) -> int:
    """A rough upper estimate of one member's memory: parameters, gradients and two optimizer
    moments, a few copies of a batch's activations, and a fixed overhead measured on CPU; in
    cross-validation each member also holds a copy of its fold's data (`samples` of them)."""
    widths = getattr(cfg.model, "widths", None) or (cfg.model.width,) * 2
    activations = cfg.train.batch_size * (input_size + sum(widths)) * 4 * 8
    fold_data = samples * (input_size + 1) * 4 if cfg.data.cv_folds > 1 else 0
    return 4 * 8 * num_params + activations + fold_data + (6 << 20)


class VmapLauncherImpl:
    def __init__(self, max_population: int, memory_budget_mb: Optional[int]) -> None:
        if max_population < 1:
            raise ValueError(f"hydra.launcher.max_population={max_population}: must be >= 1")
        self.max_population, self.memory_budget_mb = max_population, memory_budget_mb
        self.train: Callable = engine.train_trials  # tests swap it to inject failures
        self.progress = SweepProgress()
        self.name = "vmap"  # the launcher recorded in result.json

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        if task_function is train_task:  # compose jobs once per set of group choices
            install_fast_sweep_configs(hydra_context.config_loader)

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        if self.task_function is not train_task:
            basic = BasicLauncher()
            basic.setup(hydra_context=self.hydra_context, task_function=self.task_function,
                        config=self.config)
            return basic.launch(job_overrides, initial_job_idx)
        return self.run_jobs([(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)])

    def start(self) -> None:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        train.enable_compilation_cache()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def plan(self, indexed: list[tuple[int, list]]) -> tuple[list[Job], dict[tuple, Group]]:
        """The jobs (composed) and their groups by signature; a job whose config is bad is in
        no group."""
        jobs = [self._compose(index, overrides) for index, overrides in indexed]
        groups: dict[tuple, Group] = {}
        for job in jobs:
            if job.cfg is not None:
                groups.setdefault(signature(job.cfg), Group()).jobs.append(job)
        return jobs, groups

    def units(self, indexed: list[tuple[int, list]]) -> list[list[tuple[int, list]]]:
        """The jobs (job number, overrides) in the units they train in: one per population chunk;
        a job whose config is bad is a unit of its own."""
        self.start()
        jobs, groups = self.plan(indexed)
        units = [[(job.index, job.overrides)] for job in jobs if job.cfg is None]
        for group in groups.values():
            units += [[(job.index, job.overrides) for job in chunk] for chunk in self.chunks(group)]
        return sorted(units)

    def run_jobs(self, indexed: list[tuple[int, list]]) -> list[JobReturn]:
        """Runs jobs given as (job number, overrides): trains them, then replays each under
        Hydra's `run_job` (job directory, .hydra files, callbacks)."""
        self.start()
        jobs, groups = self.plan(indexed)
        log.info("Launching %d jobs as %d population%s (hydra/launcher=vmap)", len(jobs),
                 len(groups), "" if len(groups) == 1 else "s")
        with self.progress.running():
            for g, group in enumerate(groups.values(), start=1):
                log.info("population %d/%d: %d trials (%s)", g, len(groups), len(group.jobs),
                         group.describe())
                self._train_group(group, f"population {g}/{len(groups)}")

        runs = []
        for job in jobs:
            log.info("\t#%d : %s", job.index, " ".join(filter_overrides(job.overrides)))
            runs.append(run_job(hydra_context=self.hydra_context, task_function=_replay(job),
                                config=job.sweep_config, job_dir_key="hydra.sweep.dir",
                                job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs

    def _compose(self, index: int, overrides: list) -> Job:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = index
            sweep_config.hydra.job.num = index
        job = Job(index, overrides, sweep_config, output_dir=str(
            Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)))
        task_cfg = copy.deepcopy(sweep_config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        try:
            job.cfg = to_config(task_cfg)
        except ConfigError as e:
            job.error = e
        return job

    def _chunk_size(self, group: Group) -> int:
        size = self.max_population
        if self.memory_budget_mb is not None:
            cfg = group.cfg
            try:
                ds = data_lib.load(cfg.data)
            except ConfigError:
                return size  # train_population reports the error for every job
            pop = engine.population(cfg, ds)
            one = jax.ShapeDtypeStruct((1,), np.int32)
            shapes = jax.eval_shape(pop.init, jax.tree.map(
                lambda v: jax.ShapeDtypeStruct((1,), v.dtype), hparams(cfg)), one, one)
            num_params = sum(int(np.prod(p.shape[1:])) for p in jax.tree.leaves(shapes.params))
            per_member = member_bytes(cfg, num_params, int(np.prod(ds.input_shape)),
                                      ds.n_train + ds.n_val)
            size = max(1, min(size, (self.memory_budget_mb << 20) // per_member))
        return size

    def chunks(self, group: Group) -> list[list[Job]]:
        """A group's jobs in chunks that fit `max_population` and `memory_budget_mb`."""
        # A chunk's size counts members: a trial brings train.repeats x data.cv_folds of them.
        size = max(1, self._chunk_size(group) // max(
            engine.members_per_trial(j.cfg) for j in group.jobs))
        return [group.jobs[i:i + size] for i in range(0, len(group.jobs), size)]

    def _train_group(self, group: Group, label: str) -> None:
        chunks = self.chunks(group)
        if len(chunks) > 1:
            log.info("  in %d chunks of at most %d (hydra.launcher.max_population, "
                     "memory_budget_mb)", len(chunks), len(chunks[0]))
        for c, chunk in enumerate(chunks, start=1):
            self._train_chunk(chunk, label + (f" chunk {c}/{len(chunks)}" if len(chunks) > 1
                                              else ""))

    def _train_chunk(self, chunk: list, label: str = "population") -> None:
        on_progress = self.progress.population(
            f"{label}: {len(chunk)} trials", chunk[0].cfg.train.epochs,
            [f"trial {job.index}" for job in chunk])
        try:
            outcomes = self.train([job.cfg for job in chunk], launcher=self.name,
                                  on_progress=on_progress,
                                  output_dirs=[job.output_dir for job in chunk])
        except ConfigError as e:
            for job in chunk:
                job.error = e
            return
        except Exception as e:  # noqa: BLE001
            if not _is_out_of_memory(e) or len(chunk) == 1:
                log.error("population of %d failed: %r", len(chunk), e)
                for job in chunk:  # each job fails under Hydra with this error; the sweep goes on
                    job.crash = e
                return
            half = len(chunk) // 2
            log.warning("population of %d ran out of memory: retrying as %d + %d", len(chunk),
                        half, len(chunk) - half)
            self._train_chunk(chunk[:half], label)
            self._train_chunk(chunk[half:], label)
            return
        for job, outcome in zip(chunk, outcomes, strict=True):
            job.outcome = outcome


def _replay(job: Job) -> TaskFunction:
    """The job's task function under Hydra: writes what the population computed for it."""

    def task(dict_cfg: DictConfig) -> float:
        output_dir = HydraConfig.get().runtime.output_dir
        if job.error is not None:
            return record_failure(dict_cfg, job.error, output_dir)
        if job.crash is not None:
            raise job.crash
        result = job.outcome.result
        engine.write_metrics(job.outcome.rows, output_dir)
        engine.write_result(result, output_dir)
        engine.report_result(result)
        return engine.sweeper_value(result)

    return task
