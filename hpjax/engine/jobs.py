"""Trials and how each job ends.

A trial of `train.repeats` seeds and `data.cv_folds` folds trains as that many members, and
reports their mean (`train_trials`). Each job ends under Hydra through its `JobEnd`: the one
place that writes a job's `metrics.jsonl` and `result.json`, logs its result and returns the
sweeper's value. A single run is `train_one` (or `run`); a launcher's batch is `hpjax.engine.batch`.
"""

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from hpjax.config import Config, ConfigError
from hpjax.engine.checkpoint import PARAMS_DIR, PARAMS_FILE
from hpjax.engine.compile import CompileStats
from hpjax.engine.loop import Training, drive
from hpjax.engine.progress import EpochReport
from hpjax.engine.schedulers.base import Scheduler
from hpjax.errors import disk_fault
from hpjax.results import (
    METRICS_FILE,
    Outcome,
    Result,
    aggregate,
    log_result,
    metrics_line,
    write_metrics,
)

log = logging.getLogger("hpjax")


def members_per_trial(cfg: Config) -> int:
    return cfg.train.repeats * cfg.data.cv_folds


def checkpoint_dir(output_dir: str, member: int = 0, members: int = 1) -> str:
    """Where a trial's member keeps its checkpoints: `checkpoints/` in the job directory."""
    path = os.path.join(output_dir, "checkpoints")
    return path if members == 1 else os.path.join(path, f"member_{member}")


def params_path(output_dir: str, member: int = 0, members: int = 1) -> str:
    """Where a trial's member keeps its best variables: `params.msgpack` in the job directory
    (`params/member_<k>.msgpack` for each of several seeds or folds)."""
    if members == 1:
        return os.path.join(output_dir, PARAMS_FILE)
    return os.path.join(output_dir, PARAMS_DIR, f"member_{member}.msgpack")


def orbax_params_dir(output_dir: str, member: int = 0, members: int = 1) -> str:
    """Where earlier versions kept them as an Orbax checkpoint: `params/` (`params/member_<k>/`)."""
    path = os.path.join(output_dir, PARAMS_DIR)
    return path if members == 1 else os.path.join(path, f"member_{member}")


class TrialsTraining:
    """Trials of one signature as one population (`hpjax.engine.loop.Training`), each
    trial's seeds and folds members of their own; a trial of several members reports their
    mean, to the scheduler epoch by epoch and in its outcome. `trials`: the scheduler's names
    of the trials (default: their indices). `output_dirs`: the trials' job directories, where
    their checkpoints and best variables go. `on_epoch` sees (member, row). With a scheduler
    that refills (`Scheduler.refill` gives (trial, payload) pairs; `new_trial(payload)`: its
    (config, job directory or None); default: the payload is a config), trials of one member
    (`train.repeats` and `data.cv_folds` 1) take the slots of trials that ended; their outcomes
    follow the configs'. `on_trial_end(trial index, outcome)`: a refilled population's trial
    that left its slot, final. `pad_to_compiled`: see `hpjax.engine.loop.train_population`."""

    def __init__(self, cfgs: list[Config], *, trials: Optional[list] = None,
                 launcher: str = "basic",
                 on_progress: Optional[Callable[[EpochReport], None]] = None,
                 output_dirs: Optional[list[str]] = None,
                 on_epoch: Optional[Callable[[int, dict], None]] = None,
                 scheduler: Optional[Scheduler] = None,
                 new_trial: Optional[Callable[[Any], tuple]] = None,
                 refill: Optional[Callable[[int], list]] = None,
                 on_trial_end: Optional[Callable[[int, Outcome], None]] = None,
                 pad_to_compiled: bool = False) -> None:
        trials = list(range(len(cfgs))) if trials is None else list(trials)
        members, folds, owners, dirs, params = [], [], [], [], []
        for i, cfg in enumerate(cfgs):
            for r in range(cfg.train.repeats):
                seeded = cfg if r == 0 else dataclasses.replace(
                    cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + r))
                for f in range(cfg.data.cv_folds):
                    members.append(seeded)
                    folds.append(f)
                    owners.append(i)
                    if output_dirs and all(output_dirs):
                        k, n = r * cfg.data.cv_folds + f, members_per_trial(cfg)
                        dirs.append(checkpoint_dir(output_dirs[i], k, n))
                        params.append(params_path(output_dirs[i], k, n)
                                      if cfg.train.save_params == "best" else None)
        self.owners = owners  # member -> trial index (grows as trials join)
        report = on_progress and (lambda r: on_progress(dataclasses.replace(
            r, best_member=None if r.best_member is None else owners[r.best_member])))
        metric = cfgs[0].objective.metric
        if scheduler is not None and metric not in cfgs[0].task.metrics():
            raise ConfigError("objective.metric", metric, "is a host metric, known once a "
                              "trial ends; multi-fidelity search and pruners compare trials "
                              "every epoch: make the objective an epoch's metric "
                              "(val/accuracy, val/loss, ...) and report it with "
                              "task.host_metrics")
        explores = scheduler is not None and bool(scheduler.explores)
        if explores and len(members) != len(cfgs):
            raise ConfigError("train.repeats", cfgs[0].train.repeats, "must be 1 under PBT (and "
                              "data.cv_folds 1): a member's parameters move between trials")
        join = None
        if scheduler is not None and scheduler.refills and not explores and \
                len(members) == len(cfgs):
            convert = new_trial or (lambda cfg: (cfg, None))

            def join(n: int) -> list:
                from hpjax.engine.state import NewMember

                out = []
                for trial, payload in (refill or scheduler.refill)(n):
                    cfg, output_dir = convert(payload)
                    scheduler.on_trial_add(trial)
                    owners.append(owners[-1] + 1)
                    out.append(NewMember(cfg, trial, 0, output_dir and checkpoint_dir(
                        output_dir), params_path(output_dir) if output_dir and
                        cfg.train.save_params == "best" else None))
                return out
        on_left = join and on_trial_end and (
            lambda k, o: on_trial_end(owners[k], aggregate([o])))
        self.training = Training(members, trials=[trials[i] for i in owners], folds=folds,
                                 launcher=launcher, on_progress=report, on_epoch=on_epoch,
                                 checkpoint_dirs=dirs or None, params_paths=params or None,
                                 scheduler=scheduler, join=join, on_left=on_left,
                                 pad_to_compiled=pad_to_compiled)

    # what `hpjax.engine.loop.drive` reads of a training
    @property
    def run(self) -> Any:
        return self.training.run

    @property
    def epoch(self) -> int:
        return self.training.epoch

    @property
    def waiting(self) -> set:
        return self.training.waiting

    def advance(self) -> bool:
        return self.training.advance()

    def suspend(self) -> list:
        return self.training.suspend()

    def finish(self) -> list[Outcome]:
        """One outcome per trial (its members' aggregate), the joined trials' after."""
        outcomes, owners = self.training.finish(), self.owners
        return [aggregate([o for o, owner in zip(outcomes, owners, strict=True) if owner == i])
                for i in range(owners[-1] + 1)]


def train_trials(cfgs: list[Config], *, trials: Optional[list] = None, **kw: Any) -> list[Outcome]:
    """Trains trials of one signature as one population (`TrialsTraining`, which takes the
    keywords); a scheduler's trials are added to it here. Returns one outcome per trial."""
    scheduler = kw.get("scheduler")
    training = TrialsTraining(cfgs, trials=trials, **kw)
    for trial in (range(len(cfgs)) if trials is None else trials) if scheduler is not None \
            else ():
        scheduler.on_trial_add(trial)
    outcomes: list = []
    drive([training], lambda t: outcomes.extend(t.finish()))
    return outcomes


@dataclass
class JobEnd:
    """How one job ends under Hydra: called as the job's task function (`hydra.core.utils.
    run_job` gives it the job's config and directory), it writes the job's files and returns
    the sweeper's value. Exactly one of `outcome`, `error`, `crash` is set."""

    outcome: Optional[Outcome] = None
    # a bad value, or a trial whose program fails: the trial fails, the sweep goes on
    error: Optional[Exception] = None
    crash: Optional[BaseException] = None  # raised again in the job, as the basic launcher would
    metrics_written: bool = False  # metrics.jsonl was written epoch by epoch already
    compilations: Optional[tuple] = None  # (new compilations, cache hits), logged if known
    # the trial waits for its scheduler, suspended (`hpjax.engine.loop.Training.suspend`): its
    # outcome is final only if the scheduler stops it there
    paused: bool = False

    def __call__(self, dict_cfg: Any) -> float:
        from hydra.core.hydra_config import HydraConfig

        return self.finish(HydraConfig.get().runtime.output_dir, dict_cfg.objective.metric,
                           dict_cfg.objective.mode)

    def finish(self, output_dir: Optional[str], metric: str = "", mode: str = "max") -> float:
        if self.crash is not None:
            raise self.crash
        if self.error is not None and disk_fault(self.error):
            # a full or read-only disk under its checkpoint or params.msgpack: the job fails as
            # when its own files cannot be written (a sweeper runs it again once there is room)
            raise self.error
        if self.error is not None:
            error = self.error if isinstance(self.error, ConfigError) else \
                f"{type(self.error).__name__}: {self.error}"
            log.error("hpjax: error: %s", error)
            result = Result.failed(error, metric, mode)
        else:
            result = self.outcome.result
            if output_dir and not self.metrics_written:
                write_metrics(self.outcome.rows, output_dir)
            log_result(result, *(self.compilations or ()))
        if output_dir:
            result.write(output_dir)
        return result.sweeper_value()


def train_one(cfg: Config, output_dir: Optional[str] = None,
              launcher: str = "basic") -> JobEnd:
    """Trains one configuration, streaming `metrics.jsonl` into `output_dir` epoch by epoch."""
    compile_count, hits = CompileStats.count, CompileStats.cache_hits
    files: list = []  # opened at the first epoch: a config error writes nothing

    def on_epoch(member: int, row: dict) -> None:
        if output_dir:
            if not files:
                files.append(open(os.path.join(output_dir, METRICS_FILE), "w"))
            files[0].write(metrics_line(row))
            files[0].flush()
        shown = "  ".join(f"{k.replace('accuracy', 'acc')} {v:.4f}" for k, v in row.items()
                          if k.startswith(("train/", "val/")))
        log.info("epoch %3d/%d  %s  lr %.3g", row["epoch"], cfg.train.epochs, shown, row["lr"])

    try:
        one = members_per_trial(cfg) == 1  # several: metrics.jsonl holds their mean per epoch
        outcome = train_trials([cfg], launcher=launcher, on_epoch=on_epoch if one else None,
                               output_dirs=[output_dir] if output_dir else None)[0]
    finally:
        for f in files:
            f.close()
    return JobEnd(outcome, metrics_written=bool(files),
                  compilations=(CompileStats.count - compile_count,
                                CompileStats.cache_hits - hits))


def run(cfg: Config, output_dir: Optional[str] = None, launcher: str = "basic") -> Result:
    """Trains one configuration and, given `output_dir`, writes `metrics.jsonl` and `result.json`.

    Args:
      cfg: a validated config (`hpjax.compose`).
      output_dir: the job's directory; None writes nothing.
      launcher: recorded in the result.
    Returns:
      The trial's `Result`; `Result.objective` is None when training diverged.
    Raises:
      ConfigError: the data cannot be loaded or does not fit the config (before any compile).
    """
    end = train_one(cfg, output_dir, launcher)
    end.finish(output_dir)
    return end.outcome.result
