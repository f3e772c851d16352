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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from hpjax import data as data_lib
from hpjax.config import Config, ConfigError
from hpjax.engine import population, trainer
from hpjax.engine.hparams import signature
from hpjax.engine.jobs import JobEnd, members_per_trial, train_trials
from hpjax.engine.progress import SweepProgress
from hpjax.engine.schedulers.halving import Stopper, SuccessiveHalving
from hpjax.results import Outcome

log = logging.getLogger("hpjax")


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
         memory_budget_mb: Optional[int] = 4096) -> list[list[list[int]]]:
    """The indices of `cfgs` by population (one per signature, in order of first appearance),
    each in chunks that fit `max_population` members and `memory_budget_mb` MiB; None configs
    (jobs that failed validation) are in no population."""
    if max_population < 1:
        raise ValueError(f"hydra.launcher.max_population={max_population}: must be >= 1")
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        if cfg is not None:
            groups.setdefault(signature(cfg), []).append(i)
    planned = []
    for members in groups.values():
        size = _chunk_size([cfgs[i] for i in members], max_population, memory_budget_mb)
        planned.append([members[i:i + size] for i in range(0, len(members), size)])
    return planned


def describe(cfg: Config) -> str:
    width = getattr(cfg.model, "width", "")
    return (f"{cfg.data.name}, {cfg.model.name} {width}".rstrip() + f", {cfg.optimizer.name}, "
            f"{cfg.schedule.name}, batch {cfg.train.batch_size}, {cfg.train.epochs} epochs")


def _is_out_of_memory(error: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


def train_chunk(jobs: list[Job], ends: dict[int, JobEnd], *, launcher: str,
                progress: SweepProgress, label: str, train: Callable = train_trials,
                ids: Optional[list[int]] = None,
                stoppers: Optional[Callable[[list[int]], Stopper]] = None,
                refill: Optional[Callable[[int], list[tuple[int, Job]]]] = None,
                on_ended: Optional[Callable[[], None]] = None, quiet: bool = False) -> None:
    """Trains one chunk as one population and sets `ends[id]` for each of its jobs.
    `refill(n)`: at most n new (id, job) of the chunk's signature for slots that free up; a job
    that leaves its slot ends at once (`ends[id]` set, then `on_ended()`). `quiet`: without a
    live display, its epochs are logged at DEBUG (a sweep's batch like the one before)."""
    jobs, ids = list(jobs), list(range(len(jobs))) if ids is None else list(ids)
    extra: dict = {"stopper": stoppers(ids)} if stoppers is not None else {}
    names = [job.name for job in jobs]
    if refill is not None:
        def new_trials(n: int) -> list:
            joined = refill(n)
            for i, job in joined:  # the stopper and the progress see them as they join
                jobs.append(job)
                ids.append(i)
                names.append(job.name)
            return [(job.cfg, job.output_dir) for _, job in joined]
        extra["refill"] = new_trials

        def trial_end(i: int, outcome: Outcome) -> None:
            outcome.result.population = {"label": label, "start": round(start, 3),
                                         "end": round(time.time(), 3), "members": len(jobs),
                                         "compile_s": outcome.result.compile_time_s,
                                         **(outcome.result.population or {})}
            ends[ids[i]] = JobEnd(outcome)
            if on_ended is not None:
                on_ended()
        extra["on_trial_end"] = trial_end
    start = time.time()
    on_progress = progress.population(f"{label}: {len(jobs)} trials", jobs[0].cfg.train.epochs,
                                      names) if not quiet or progress.live else (
        lambda r: log.debug("%s: epoch %d/%d, %d/%d members running", label, r.epoch, r.epochs,
                            r.running, r.members))
    try:
        # a smaller last batch pads to the size the batches before compiled
        outcomes = train([job.cfg for job in jobs], launcher=launcher, on_progress=on_progress,
                         output_dirs=[job.output_dir for job in jobs], pad_to_compiled=True,
                         **extra)
    except ConfigError as e:
        ends.update({i: JobEnd(error=e) for i in ids})
        return
    except Exception as e:  # noqa: BLE001  (a failure is its trial's alone, never the sweep's)
        if len(jobs) == 1:
            log.error("%s failed: %s: %s", jobs[0].name or "trial", type(e).__name__, e)
            ends[ids[0]] = JobEnd(error=e)
            return
        half = len(jobs) // 2
        # Out of memory: smaller populations fit. Anything else (a value that passes the schema
        # but breaks the program): halving finds the trials that fail, and the others train.
        log.warning("population of %d %s: retrying as %d + %d", len(jobs),
                    "ran out of memory" if _is_out_of_memory(e) else
                    f"failed ({type(e).__name__}: {e})", half, len(jobs) - half)
        for part in (slice(None, half), slice(half, None)):
            train_chunk(jobs[part], ends, launcher=launcher, progress=progress, label=label,
                        train=train, ids=ids[part], stoppers=stoppers, refill=refill,
                        on_ended=on_ended, quiet=quiet)
        return
    population = {"label": label, "start": round(start, 3), "end": round(time.time(), 3),
                  "members": len(jobs),
                  "compile_s": round(sum(o.result.compile_time_s for o in outcomes), 4)}
    rule = getattr(extra.get("stopper"), "rule", extra.get("stopper"))
    if isinstance(rule, SuccessiveHalving) and rule.promoted:  # a bracket's rungs as they ran
        population["rungs"] = rule.table()
    for o in outcomes:  # (a refilled trial's says when it joined)
        o.result.population = {**population, **(o.result.population or {})}
    ends.update({i: JobEnd(o) for i, o in zip(ids, outcomes, strict=True)})


_LAUNCHED: dict[str, list] = {}  # sweep directory -> the lines its last batch logged


def _repeated(jobs: list[Job], lines: list) -> bool:
    """Whether a batch's launch lines repeat those of the sweep's batch before: its lines (and
    its populations' epochs) then go to DEBUG, so that a sweep of thousands of trials in
    batches of 64 shows them once, not four lines a batch."""
    sweep = os.path.dirname(os.path.abspath(jobs[0].output_dir)) if jobs else ""
    repeated = _LAUNCHED.get(sweep) == lines
    _LAUNCHED[sweep] = lines
    return repeated


def train_jobs(jobs: list[Job], *, launcher: str = "vmap", max_population: int = 64,
               memory_budget_mb: Optional[int] = 4096,
               progress: Optional[SweepProgress] = None,
               train: Callable = train_trials,
               stoppers: Optional[Callable[[list[int]], Stopper]] = None,
               on_ended: Optional[Callable[[dict[int, JobEnd]], None]] = None,
               refill: Optional[Callable[[int], list[Job]]] = None) -> list[JobEnd]:
    """Trains a batch of jobs as populations; returns each job's `JobEnd`, in order.

    Args:
      jobs: the batch; a job with an `error` is not trained and fails when it ends.
      launcher: recorded in each result.
      max_population, memory_budget_mb: the largest chunk, in members and in MiB.
      progress: where populations report each epoch (default: a `SweepProgress`).
      train: trains one chunk (`train_trials`'s signature).
      stoppers: given the batch positions of a chunk's jobs, the `hpjax.engine.schedulers.halving.Stopper` that
        prunes them as they train (successive halving, Hyperband, Optuna's pruners).
      on_ended: called with {job index: JobEnd} as soon as jobs end (each chunk, and the jobs
        that failed validation first), so that their results are written before the batch ends.
      refill: called with a number of slots that freed up in a population (a trial pruned or
        ended), returns at most that many new jobs (fewer once the sweep has all it needs);
        they train in those slots (`hpjax.engine.refill`), or, of another signature, after the
        batch's populations. They follow `jobs` in the returned list, in the order given.
    """
    progress = progress or SweepProgress()
    jobs = list(jobs)
    deferred: list[int] = []  # refilled jobs of another signature: trained after the others
    ends = {i: JobEnd(error=job.error) for i, job in enumerate(jobs) if job.cfg is None}
    told: set[int] = set()

    def tell() -> None:
        new = {i: e for i, e in ends.items() if i not in told}
        told.update(new)
        if new and on_ended is not None:
            on_ended(new)

    def chunk_refill(sig: tuple) -> Callable[[int], list[tuple[int, Job]]]:
        def ask(n: int) -> list[tuple[int, Job]]:
            joined: list[tuple[int, Job]] = []
            while len(joined) < n:
                new = refill(n - len(joined))
                if not new:
                    break
                for job in new:
                    jobs.append(job)
                    i = len(jobs) - 1
                    if job.cfg is None:
                        ends[i] = JobEnd(error=job.error)
                    elif signature(job.cfg) != sig or members_per_trial(job.cfg) != 1:
                        deferred.append(i)
                    else:
                        joined.append((i, job))
            return joined
        return ask

    tell()
    planned = plan([job.cfg for job in jobs], max_population=max_population,
                   memory_budget_mb=memory_budget_mb)
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
    with progress.running():
        for g, chunks in enumerate(planned, start=1):
            first = jobs[chunks[0][0]].cfg
            for c, chunk in enumerate(chunks, start=1):
                label = f"population {g}/{len(planned)}" + (
                    f" chunk {c}/{len(chunks)}" if len(chunks) > 1 else "")
                train_chunk([jobs[i] for i in chunk], ends, launcher=launcher,
                            progress=progress, label=label, train=train, ids=chunk,
                            stoppers=stoppers, on_ended=tell, quiet=quiet,
                            refill=chunk_refill(signature(first)) if refill is not None
                            and members_per_trial(first) == 1 else None)
                tell()
            while deferred and g == len(planned):  # refilled jobs of another signature
                later = list(deferred)
                deferred.clear()
                for chunks in plan([jobs[i].cfg for i in later], max_population=max_population,
                                   memory_budget_mb=memory_budget_mb):
                    for chunk in chunks:
                        ids = [later[i] for i in chunk]
                        train_chunk([jobs[i] for i in ids], ends, launcher=launcher,
                                    progress=progress, label=f"population {g}+", train=train,
                                    ids=ids, stoppers=stoppers, on_ended=tell,
                                    refill=chunk_refill(signature(jobs[ids[0]].cfg)))
                        tell()
    return [ends[i] for i in range(len(jobs))]


__all__ = ["Job", "JobEnd", "describe", "member_bytes", "plan", "train_chunk", "train_jobs"]
