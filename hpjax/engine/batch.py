"""A launcher's batch of jobs: planned into populations and chunks, trained, each job ended.

Jobs of one static signature train as one population; a population larger than
`max_population` members, or than a memory budget allows (an estimate from the program's
parameter and activation shapes), trains in chunks. A chunk that runs out of device memory is
split in two and trained again, and so is one that fails otherwise, down to the trials that
fail: each fails alone (its error in its `result.json`), the others train.
"""

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from hpjax import data as data_lib
from hpjax.config import Config, ConfigError
from hpjax.engine import population, trainer
from hpjax.engine.hparams import signature
from hpjax.engine.jobs import JobEnd, TrialsTraining, members_per_trial
from hpjax.engine.loop import drive
from hpjax.engine.progress import SweepProgress
from hpjax.engine.schedulers.base import Scheduler
from hpjax.engine.schedulers.halving import SuccessiveHalving
from hpjax.engine.schedulers.study import StudyTrials
from hpjax.errors import disk_fault
from hpjax.results import Outcome

log = logging.getLogger("hpjax")


@runtime_checkable
class PopulationLauncher(Protocol):
    """What a sweeper may call on a launcher that trains populations (hpjax's vmap and
    submitit launchers declare it): `run_populations(jobs, scheduler, on_result)` trains the
    jobs, given as (job number, overrides), driven by `scheduler` (its trials are the job
    numbers; None: every trial to its end) and calls `on_result(job number, JobReturn)` as
    each job ends; it returns the jobs' `JobReturn`s in order, then those of the trials the
    scheduler's `refill` added. `populations`: whether it trains populations now (hpjax's
    task); `in_process`: whether the scheduler runs in the caller's process (else it is
    pickled into the jobs, and may not hold live objects such as an Optuna study);
    `composes_batch_first`: whether `launch` composes every job of a batch before any runs (a
    bad override then fails the batch before it starts: a sweeper need not check it first)."""

    in_process: bool
    populations: bool
    composes_batch_first: bool

    def run_populations(self, jobs: Sequence[tuple[int, Sequence[str]]],
                        scheduler: Optional[Scheduler],
                        on_result: Optional[Callable[[int, Any], None]] = None
                        ) -> Sequence[Any]: ...


def composes_batch_first(launcher: Any) -> bool:
    """Whether a launcher composes a batch's jobs before any runs: what a `PopulationLauncher`
    says; any other launcher (Hydra's basic one, submitit's) composes each job as it runs it,
    so a sweeper checks the batch before launching it (`Sweeper.validate_batch_is_legal`)."""
    return isinstance(launcher, PopulationLauncher) and launcher.composes_batch_first


@dataclass
class Job:
    """One job of a batch: its validated config (None when `error`) and its job directory."""

    cfg: Optional[Config]
    output_dir: str
    name: str = ""  # how progress names it ("trial 7")
    error: Optional[ConfigError] = None


_MEMBER_BYTES: dict[tuple, int] = {}  # by what determines them: a batch's shapes repeat


def member_bytes(cfg: Config, ds: data_lib.Dataset) -> int:
    """An upper estimate of one member's memory: parameters, gradients and two optimizer
    moments (8 copies), the activations of a training batch kept for the backward pass (8
    copies of every module output), a copy of its fold's data in cross-validation, and a fixed
    overhead measured on CPU. Computed once per signature and data shape: its shape tracing
    would otherwise run at every batch."""
    key = (signature(cfg), ds.input_shape, ds.num_classes, ds.n_train, ds.n_val, ds.folds)
    if key not in _MEMBER_BYTES:
        _MEMBER_BYTES[key] = _member_bytes(cfg, ds)
    return _MEMBER_BYTES[key]


def _member_bytes(cfg: Config, ds: data_lib.Dataset) -> int:
    import jax
    import jax.numpy as jnp

    spec = population.get(cfg, ds).spec
    params = jax.eval_shape(functools.partial(trainer.init_params, spec),
                            jax.ShapeDtypeStruct((), jnp.int32))
    x = jax.ShapeDtypeStruct((spec.batch_size, *ds.input_shape), jnp.float32)
    _, captured = jax.eval_shape(lambda p, x: trainer.intermediates(spec, p, x), params, x)
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params["params"]))
    activations = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(captured)) + int(
        np.prod(x.shape))
    fold_data = (ds.n_train + ds.n_val) * (int(np.prod(ds.input_shape)) + 1) if ds.folds else 0
    return 4 * (8 * num_params + 8 * activations + fold_data) + (6 << 20)


def _chunk_size(cfgs: list[Config], max_population: int,
                memory_budget_mb: Optional[int]) -> int:
    """Trials per chunk of one signature's group (a trial brings repeats x folds members)."""
    members = max_population
    if memory_budget_mb is not None:
        try:
            ds = data_lib.load(cfgs[0].data, cfgs[0].task.name == "regression")
        except ConfigError:
            ds = None  # training reports the error for every job
        if ds is not None:
            members = max(1, min(members, (memory_budget_mb << 20) // member_bytes(cfgs[0], ds)))
    return max(1, members // max(members_per_trial(c) for c in cfgs))


def plan(cfgs: list[Optional[Config]], *, max_population: int = 64,
         memory_budget_mb: Optional[int] = 4096,
         failed: Optional[dict[int, Exception]] = None) -> list[list[list[int]]]:
    """The indices of `cfgs` by population (one per signature, in order of first appearance),
    each in chunks that fit `max_population` members and `memory_budget_mb` MiB; None configs
    (jobs that failed validation) are in no population. A signature whose program cannot be
    built to estimate its memory (the user's model raises in its constructor or init, its data
    function raises) raises, or, given `failed`, is in no population either: each of its
    indices maps to the error there, for its trial to fail with it."""
    if max_population < 1:
        raise ValueError(f"hydra.launcher.max_population={max_population}: must be >= 1")
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        if cfg is not None:
            groups.setdefault(signature(cfg), []).append(i)
    planned = []
    for members in groups.values():
        try:
            size = _chunk_size([cfgs[i] for i in members], max_population, memory_budget_mb)
        except Exception as e:  # noqa: BLE001  (the user's code: its trials fail, not the sweep)
            if failed is None:
                raise
            failed.update(dict.fromkeys(members, e))
            continue
        planned.append([members[i:i + size] for i in range(0, len(members), size)])
    return planned


def describe(cfg: Config) -> str:
    width = getattr(cfg.model, "width", "")
    return (f"{cfg.data.name}, {cfg.model.name} {width}".rstrip() + f", {cfg.optimizer.name}, "
            f"{cfg.schedule.name}, batch {cfg.train.batch_size}, {cfg.train.epochs} epochs")


def _is_out_of_memory(error: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


class _Chunk:
    """One chunk of a batch trained as one population, its jobs' `JobEnd`s set in `ends` as
    they end. A chunk that fails is split in two (`parts`), each trained anew, down to the
    trials that fail: each fails alone (its error in its `result.json`), the others train."""

    def __init__(self, batch: "_Batch", ids: list[int], label: str, quiet: bool,
                 refill: bool) -> None:
        self.batch, self.ids, self.label, self.quiet = batch, list(ids), label, quiet
        self.jobs = [batch.jobs[i] for i in self.ids]
        self.refill = refill and members_per_trial(self.jobs[0].cfg) == 1
        self.training: Any = None
        self.parts: list[_Chunk] = []
        self.start = 0.0
        self.paused: set = set()  # its trials suspended while they wait for the scheduler

    # what `hpjax.engine.loop.drive` reads of a training
    @property
    def run(self) -> Any:
        return None if self.training is None else self.training.run

    @property
    def epoch(self) -> int:
        return 0 if self.training is None else self.training.epoch

    @property
    def waiting(self) -> set:
        return set() if self.training is None else self.training.waiting

    def suspend(self) -> None:
        self.paused.update(self.training.suspend())

    def advance(self) -> bool:
        b, jobs = self.batch, self.jobs
        try:
            if self.training is None:
                self.training = self._start()
            if not self.training.advance():
                return False
            outcomes = self.training.finish()
            self.training = None  # its device state goes now, not when the batch ends
        except ConfigError as e:
            b.fail(self.ids, e)
            return True
        except Exception as e:  # noqa: BLE001  (a failure is its trial's alone, never the sweep's)
            if len(jobs) == 1 or disk_fault(e):  # a full disk: halving would only fail again
                log.error("%s failed: %s: %s", jobs[0].name or "trial" if len(jobs) == 1
                          else f"{self.label}: {len(jobs)} trials", type(e).__name__, e)
                b.fail(self.ids, e)
                return True
            half = len(jobs) // 2
            # Out of memory: smaller populations fit. Anything else (a value that passes the
            # schema but breaks the program): halving finds the trials that fail, and the
            # others train.
            log.warning("population of %d %s: retrying as %d + %d", len(jobs),
                        "ran out of memory" if _is_out_of_memory(e) else
                        f"failed ({type(e).__name__}: {e})", half, len(jobs) - half)
            self.parts = [_Chunk(b, part, self.label, self.quiet, self.refill)
                          for part in (self.ids[:half], self.ids[half:])]
            return True
        population = {"label": self.label, "start": round(self.start, 3),
                      "end": round(time.time(), 3), "members": len(jobs),
                      "compile_s": round(sum(o.result.compile_time_s for o in outcomes), 4)}
        rule = b.scheduler.rule if isinstance(b.scheduler, StudyTrials) else b.scheduler
        if isinstance(rule, SuccessiveHalving) and rule.promoted:  # the bracket's rungs
            population["rungs"] = rule.table()
        for o in outcomes:  # (a refilled trial's says when it joined)
            o.result.population = {**population, **(o.result.population or {})}
        b.ends.update({i: JobEnd(o, paused=b.trials[i] in self.paused)
                       for i, o in zip(self.ids, outcomes, strict=True)})
        return True

    def _start(self) -> Any:
        b, jobs = self.batch, self.jobs
        self.start = time.time()
        names = [job.name for job in jobs]
        extra: dict = {}
        if self.refill and b.scheduler is not None and b.scheduler.refills:
            sig = signature(jobs[0].cfg)

            def refill(n: int) -> list:
                joined = b.ask(n, sig)
                for i, job in joined:  # the progress sees them as they join
                    jobs.append(job)
                    self.ids.append(i)
                    names.append(job.name)
                return [(b.trials[i], job) for i, job in joined]

            def trial_end(k: int, outcome: Outcome) -> None:
                outcome.result.population = {
                    "label": self.label, "start": round(self.start, 3),
                    "end": round(time.time(), 3), "members": len(jobs),
                    "compile_s": outcome.result.compile_time_s,
                    **(outcome.result.population or {})}
                b.ends[self.ids[k]] = JobEnd(outcome)
                b.tell()

            extra = {"refill": refill, "new_trial": lambda job: (job.cfg, job.output_dir),
                     "on_trial_end": trial_end}
        # a batch like the one before (quiet): its epochs still go to populations.log
        on_progress = b.progress.population(f"{self.label}: {len(jobs)} trials",
                                            jobs[0].cfg.train.epochs, names, quiet=self.quiet)
        # a smaller last batch pads to the size the batches before compiled
        return b.train([job.cfg for job in jobs], trials=[b.trials[i] for i in self.ids],
                       launcher=b.launcher, on_progress=on_progress,
                       output_dirs=[job.output_dir for job in jobs], pad_to_compiled=True,
                       scheduler=b.scheduler, **extra)


_LAUNCHED: dict[str, list] = {}  # sweep directory -> the lines its last batch logged


def _repeated(jobs: list[Job], lines: list) -> bool:
    """Whether a batch's launch lines repeat those of the sweep's batch before: its lines (and
    its populations' ends) then go to DEBUG, so that a sweep of thousands of trials in batches
    of 64 shows them once, not four lines a batch; its epochs go to populations.log as every
    batch's do."""
    sweep = os.path.dirname(os.path.abspath(jobs[0].output_dir)) if jobs else ""
    repeated = _LAUNCHED.get(sweep) == lines
    _LAUNCHED[sweep] = lines
    return repeated


class _Batch:
    """A batch's jobs, their trials' names, ends, and the new jobs a scheduler asks in."""

    def __init__(self, jobs: list[Job], trials: list, scheduler: Optional[Scheduler],
                 new_job: Callable[[Any], Job], launcher: str, progress: SweepProgress,
                 train: Callable, on_ended: Optional[Callable]) -> None:
        self.jobs, self.trials, self.scheduler, self.new_job = jobs, trials, scheduler, new_job
        self.launcher, self.progress, self.train, self.on_ended = (launcher, progress, train,
                                                                   on_ended)
        self.ends = {i: JobEnd(error=job.error) for i, job in enumerate(jobs) if job.cfg is None}
        self.told: set[int] = set()
        self.deferred: list[int] = []  # new jobs of another signature: trained after the others

    def fail(self, ids: list[int], error: Exception) -> None:
        """Jobs that fail; the next `tell` tells the scheduler (each ended without a score, so
        that a rung that waits for it decides without it)."""
        for i in ids:
            self.ends[i] = JobEnd(error=error)

    def tell(self) -> None:
        new = {i: e for i, e in self.ends.items() if i not in self.told}
        self.told.update(new)
        for i, end in new.items():  # a failed trial never reports: a rung must not wait for it
            if end.outcome is None and self.scheduler is not None:
                self.scheduler.on_trial_complete(self.trials[i], None)
        if new and self.on_ended is not None:
            self.on_ended(new)

    def ask(self, n: int, sig: tuple) -> list[tuple[int, Job]]:
        """At most n new jobs of signature `sig` from the scheduler; those of another
        signature (or of several members) wait for a population of their own."""
        joined: list[tuple[int, Job]] = []
        while len(joined) < n:
            new = self.scheduler.refill(n - len(joined))
            if not new:
                break
            for trial, payload in new:
                job = self.new_job(payload)
                self.jobs.append(job)
                self.trials.append(trial)
                i = len(self.jobs) - 1
                if job.cfg is None:
                    self.ends[i] = JobEnd(error=job.error)
                elif signature(job.cfg) != sig or members_per_trial(job.cfg) != 1:
                    self.deferred.append(i)
                else:
                    joined.append((i, job))
        return joined


def train_jobs(jobs: list[Job], *, launcher: str = "vmap", max_population: int = 64,
               memory_budget_mb: Optional[int] = 4096,
               progress: Optional[SweepProgress] = None, train: Callable = TrialsTraining,
               scheduler: Optional[Scheduler] = None, trials: Optional[list] = None,
               new_job: Optional[Callable[[Any], Job]] = None,
               on_ended: Optional[Callable[[dict[int, JobEnd]], None]] = None,
               suspend: bool = False) -> list[JobEnd]:
    """Trains a batch of jobs as populations; returns each job's `JobEnd`, in order.

    Args:
      jobs: the batch; a job with an `error` is not trained and fails when it ends.
      launcher: recorded in each result.
      max_population, memory_budget_mb: the largest chunk, in members and in MiB.
      progress: where populations report each epoch (default: a `SweepProgress`).
      train: starts one chunk's training (`hpjax.engine.jobs.TrialsTraining`'s signature).
      scheduler: decides epoch by epoch which trials go on (`Scheduler`), over the whole batch:
        its populations train in turn while some of them wait for it (a rung of a bracket).
        Its trials are `trials` (one per job; default: the jobs' indices). With a scheduler that
        refills, slots that free up take the jobs `new_job(payload)` of its `refill` (of
        another signature: trained after the batch's populations); they follow `jobs` in the
        returned list, in the order given.
      on_ended: called with {job index: JobEnd} as soon as jobs end (each chunk, and the jobs
        that failed validation first), so that their results are written before the batch ends.
      suspend: the scheduler also sees trials that train elsewhere (a bracket trained rung by
        rung, one process per population): once every population waits for it, each saves a
        checkpoint and ends there (`hpjax.engine.loop.Training.suspend`); the `JobEnd` of a
        trial that waits says `paused`, and its outcome is the one a stop there gives it.
    """
    jobs = list(jobs)
    trials = list(range(len(jobs)) if trials is None else trials)
    b = _Batch(jobs, trials, scheduler, new_job or (lambda job: job), launcher,
               progress or SweepProgress(), train, on_ended)
    for i, job in enumerate(jobs) if scheduler is not None else ():
        if job.cfg is not None:
            scheduler.on_trial_add(trials[i])
    b.tell()
    failed: dict[int, Exception] = {}
    planned = plan([job.cfg for job in jobs], max_population=max_population,
                   memory_budget_mb=memory_budget_mb, failed=failed)
    for e in {id(e): e for e in failed.values()}.values():
        log.error("%d trials failed as their program was built: %s: %s",
                  sum(x is e for x in failed.values()), type(e).__name__, e)
    for i, e in failed.items():
        b.fail([i], e)
    b.tell()
    lines = [("Launching %d jobs as %d population%s (hydra/launcher=%s)", len(jobs),
              len(planned), "" if len(planned) == 1 else "s", launcher)]
    for g, chunks in enumerate(planned, start=1):
        lines.append(("population %d/%d: %d trials (%s)", g, len(planned),
                      sum(map(len, chunks)), describe(jobs[chunks[0][0]].cfg)))
        if len(chunks) > 1:
            lines.append(("  in %d chunks of at most %d (hydra.launcher.max_population, "
                          "memory_budget_mb)", len(chunks), len(chunks[0])))
    quiet = _repeated(jobs, lines)
    for line in lines:
        log.log(logging.DEBUG if quiet else logging.INFO, *line)

    def done(chunk: _Chunk) -> list[_Chunk]:
        b.tell()
        return chunk.parts

    with b.progress.running():
        drive([_Chunk(b, chunk, f"population {g}/{len(planned)}" + (
            f" chunk {c}/{len(chunks)}" if len(chunks) > 1 else ""), quiet, True)
            for g, chunks in enumerate(planned, start=1)
            for c, chunk in enumerate(chunks, start=1)], done, suspend)
        while b.deferred:  # new jobs of another signature
            later = list(b.deferred)
            b.deferred.clear()
            drive([_Chunk(b, [later[i] for i in chunk], f"population {len(planned)}+", False,
                          True)
                   for chunks in plan([jobs[i].cfg for i in later],
                                      max_population=max_population,
                                      memory_budget_mb=memory_budget_mb)
                   for chunk in chunks], done)
    return [b.ends[i] for i in range(len(jobs))]


__all__ = ["Job", "JobEnd", "describe", "member_bytes", "plan", "train_jobs"]
