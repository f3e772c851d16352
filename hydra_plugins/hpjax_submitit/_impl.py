"""`hydra/launcher=hpjax_slurm` and `hpjax_submitit_local`: Hydra's submitit launchers, with
populations and retries.

With `vectorize=true` (the default) and hpjax's task, a batch is split by static signature and
size, as the vmap launcher splits it, and each chunk is one submitit job that trains its trials as
one population; otherwise each trial is one job, run by upstream's `BaseSubmititLauncher.__call__`.
A scheduled batch (a bracket) of several chunks trains rung by rung, one job per chunk and round,
its scheduler deciding in the driver (`_rungs`); of one chunk, or with `by_rung=false`, as one job.
Either way every trial gets its own job directory. A job that ends without a result (cancelled,
killed, its node lost) is submitted again, up to `max_retries` times, into the same job
directories: with `train.checkpoint_every` its trials continue from their last checkpoint. A trial
that still has none fails under Hydra, and the sweep goes on.

SLURM's signal before the time limit (`signal_delay_s`, 120 s by default: `#SBATCH
--signal=USR2@120`, submitit's preemption signal) stops the job's training at the next epoch
boundary, after a checkpoint of every trial with `train.checkpoint_every`; the job returns
`Signalled`, and the driver submits it again at once (not counted in `max_retries`; at most
`MAX_SIGNALLED` times), where its trials continue from their checkpoints.

The driver asks SLURM about all its pending jobs in one `squeue` call per poll. A query that fails
says nothing: its jobs count as running, since submitting a job again while the first may still run
would train its trials twice into the same directories.
"""

import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from ._rungs import ByRung, RungEnd, train_by_rung

log = logging.getLogger(__name__)

Unit = list[tuple[int, list]]  # the (job number, overrides) that one submitit job runs
# A job's outcome: its JobReturns, its pre-timeout signal, or why it has none
Outcome = Union[list[JobReturn], "RungEnd", "Signalled", str]

# SLURM states of a job that will not write a result any more
_ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
          "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT")
_QUERY_TIMEOUT_S = 60
MAX_SIGNALLED = 20  # resubmissions of one job stopped by its pre-timeout signal


@dataclass
class Signalled:
    """What a submitted job returns when its pre-timeout signal stopped it at an epoch boundary
    (checkpoints saved): the driver submits it again."""

    signal: str
    host: str


def _preempt_signal() -> int:
    """submitit's preemption and timeout signal: USR2, or $SUBMITIT_PREEMPT_SIGNAL."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)


def until_signalled(run: Callable[[], Any]) -> Any:
    """Runs a submitted job's trials with its pre-timeout signal deferred to the next epoch
    boundary (instead of submitit's handler, which requeues the job at once, mid-epoch)."""
    import hpjax.engine

    with hpjax.engine.defer_signals((_preempt_signal(),)):
        try:
            return run()
        except hpjax.engine.Interrupted as e:
            name = signal.Signals(e.signum).name
            log.warning("%s before the time limit: stopped at an epoch boundary, checkpoints "
                        "saved; the driver submits this job again", name)
            return Signalled(name, socket.gethostname())


class SlurmQueryError(RuntimeError):
    """SLURM could not be asked, or its answer did not parse: nothing is known about the jobs."""


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """{job id: state} of the jobs SLURM knows, from one `squeue` call for all of them (no
    accounting database needed, unlike `sacct`); a job missing from the answer is one SLURM no
    longer knows (it keeps an ended job for `MinJobAge` seconds)."""
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T",
           f"--jobs={','.join(job_ids)}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=_QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmQueryError(repr(e)) from None
    if out.returncode != 0:
        if "Invalid job id specified" in out.stderr:  # squeue's answer for one unknown id
            return {}
        raise SlurmQueryError(f"squeue exited with {out.returncode}: {out.stderr.strip()[:300]}")
    states = {}
    for line in filter(str.strip, out.stdout.splitlines()):
        job_id, _, state = line.strip().partition("|")
        if not re.fullmatch(r"[\w.\[\]-]+", job_id) or not re.fullmatch(r"[A-Z_]+", state):
            raise SlurmQueryError(f"squeue printed {line!r}, not 'job id|STATE'")
        states[job_id] = state
    return states


class JobWatch:
    """Tells which submitted jobs ended, with their results or without (and why).

    A SLURM job without a result ends only when SLURM says so (an ended state, or an id it no
    longer knows) and the result pickle is still missing `grace_s` later (it may be on its way to
    the disk); a failed query ends nothing.
    """

    def __init__(self, slurm: bool, grace_s: float) -> None:
        self.slurm, self.grace_s = slurm, grace_s
        self.ended_at: dict[str, float] = {}  # job id -> when SLURM first said it ended
        self.failures = 0  # failed SLURM queries in a row

    def poll(self, pending: dict[int, Any]) -> dict[int, Outcome]:
        """The outcomes of the jobs in `pending` (key -> submitit job) that ended."""
        outcomes, waiting = {}, {}
        for key, job in pending.items():
            if job.paths.result_pickle.exists() or (not self.slurm and job.done()):
                outcomes[key] = _results(job)
            else:
                waiting[key] = job
        if not (self.slurm and waiting):
            return outcomes
        states = self._query([job.job_id for job in waiting.values()])
        if states is None:
            return outcomes
        now = time.monotonic()
        for key, job in waiting.items():
            state = states.get(job.job_id)  # None: SLURM no longer knows the job
            if state is not None and state not in _ENDED:
                continue
            ended_at = self.ended_at.setdefault(job.job_id, now)
            if now - ended_at >= self.grace_s and not job.paths.result_pickle.exists():
                outcomes[key] = f"SLURM state {state or 'unknown: the job is gone'}"
        return outcomes

    def _query(self, job_ids: list[str]) -> Any:
        try:
            states = slurm_states(job_ids)
        except SlurmQueryError as e:
            self.failures += 1
            if self.failures == 1 or self.failures % 30 == 0:
                log.warning("SLURM query failed (%d in a row): %s; its %d jobs count as still "
                            "running", self.failures, e, len(job_ids))
            return None
        self.failures = 0
        return states


def _results(job: Any) -> Outcome:
    try:
        return job.results()[0]
    except Exception as e:  # noqa: BLE001  (killed, cancelled: no result written)
        return repr(e).splitlines()[0][:300]


def _failed(overrides: list, why: str) -> JobReturn:
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret.return_value = RuntimeError(f"the job ended without a result: {why}")
    return ret


class HpjaxSubmititImpl(BaseSubmititLauncher):
    """Upstream's launcher, submitting units (populations) and watching them for retries."""

    def __init__(self, vectorize: bool = True, max_population: int = 64,
                 memory_budget_mb: Any = 4096, max_retries: int = 2, poll_s: float = 1.0,
                 by_rung: bool = True, **params: Any) -> None:
        super().__init__(**params)
        self.vectorize, self.max_retries, self.poll_s = vectorize, max_retries, poll_s
        self.by_rung = by_rung
        self.max_population, self.memory_budget_mb = max_population, memory_budget_mb
        self._checked = False  # the vmap launcher's preflight ran (on the first batch)

    def populations(self) -> bool:
        """Whether jobs train as populations: hpjax's task (known by its marker), vectorized."""
        return bool(self.vectorize and getattr(self.task_function, "hpjax_task", False))

    def _vmap(self) -> Any:
        """The vmap launcher's implementation, which composes, plans and trains populations."""
        from hydra_plugins.hpjax_launcher._impl import VmapLauncherImpl

        assert self.config is not None
        impl = VmapLauncherImpl(self.max_population, self.memory_budget_mb)
        impl.setup(hydra_context=self.hydra_context, task_function=self.task_function,
                   config=self.config)
        choice = self.config.hydra.runtime.choices.get("hydra/launcher") or self._EXECUTOR
        impl.name = f"{choice} (population)"  # result.json's launcher
        return impl

    # -- in the submitted job ------------------------------------------------------------------
    def __call__(self, unit: Unit, singleton_state: dict, scheduler: Any = None) -> Any:
        """Runs one unit: its populations through the vmap launcher, driven by `scheduler`
        (pickled into the job; a `ByRung`: until its trials wait, then a `RungEnd`), or its
        jobs one by one as upstream runs each."""
        if self.populations():
            Singleton.set_state(singleton_state)
            setup_globals()
            vmap = self._vmap()
            if isinstance(scheduler, ByRung):
                rule, waiting = scheduler.scheduler, []

                def to_rung() -> RungEnd:
                    returns = vmap.run_populations(unit, rule, None, waiting.append)
                    return RungEnd([n for n, _ in unit], returns, waiting, rule.save())

                return until_signalled(to_rung)
            return until_signalled(lambda: vmap.run_populations(unit, scheduler, None))

        def one_by_one() -> list[JobReturn]:
            return [super(HpjaxSubmititImpl, self).__call__(
                overrides, "hydra.sweep.dir", num, f"job_id_for_{num}", singleton_state)
                for num, overrides in unit]

        return until_signalled(one_by_one)

    # -- in the driver -------------------------------------------------------------------------
    def _units(self, indexed: Unit) -> tuple[list[Unit], dict[int, Any]]:
        """The units the jobs train in, and their configs by job number (where composed)."""
        if not self.populations():
            return [[job] for job in indexed], {}
        units, cfgs = self._vmap().units(indexed)
        log.info("%d jobs as %d submitit job%s (vectorize=true)", len(indexed), len(units),
                 "" if len(units) == 1 else "s")
        return units, cfgs

    def _executor(self) -> Any:
        """The executor as upstream's `launch` builds it (inline there): `max_num_timeout` and
        keys outside `BaseQueueConf` get the executor's prefix."""
        import submitit

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        assert len(job_overrides) > 0
        indexed = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        if self.populations() and not self._checked:  # before anything is submitted
            self._checked = True
            self._vmap().preflight(indexed)
        return self._launch(indexed, None, None)

    def run_populations(self, jobs: Sequence[tuple[int, Sequence[str]]], scheduler: Any,
                        on_result: Optional[Callable[[int, JobReturn], None]] = None
                        ) -> list[JobReturn]:
        """`hpjax.engine.PopulationLauncher.run_populations`. A batch whose trials train in
        several units (populations, chunks) trains rung by rung (`by_rung`, `_rungs`): one
        submitted job per unit and round, the scheduler here deciding each rung over the whole
        batch. Otherwise (one unit, `by_rung=false`, a scheduler that explores or refills:
        PBT) the scheduler is pickled into one submitted job whose populations take turns
        there. Either way the scheduler sees every trial of its bracket. `on_result` is called
        as each trial's final return comes back."""
        if not self.populations():
            raise ValueError(f"hydra/launcher=hpjax_{self._EXECUTOR} trains populations with "
                             "hpjax's task and vectorize=true only")
        return self._launch([(n, list(o)) for n, o in jobs], scheduler, on_result)

    def _launch(self, indexed: Unit, scheduler: Any,
                on_result: Optional[Callable[[int, JobReturn], None]]) -> list[JobReturn]:
        assert self.config is not None
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, self.config.hydra.sweep.dir)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        for num, overrides in indexed:
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        rungs = scheduler is not None and self.by_rung and not scheduler.explores \
            and not scheduler.refills
        units, cfgs = self._units(indexed) if scheduler is None or rungs else ([indexed], {})
        executor = self._executor()
        state = Singleton.get_state()
        if rungs and len(units) > 1:
            returns = train_by_rung(self, executor, units, cfgs, state, scheduler, on_result)
        else:
            if scheduler is not None:  # one job whose populations take turns at the rungs
                units = [indexed]
            jobs = self.submit(executor, units, state, scheduler)
            returns = self.wait(executor, units, jobs, state, scheduler, on_result)
        return [returns[num] for num, _ in indexed]

    def submit(self, executor: Any, units: list[Unit], state: dict, scheduler: Any) -> list:
        old_umask = os.umask(0o077)  # submitit's pickles hold the whole config: the user's only
        try:
            with executor.batch():
                return [executor.submit(self, unit, state, scheduler) for unit in units]
        finally:
            os.umask(old_umask)

    def wait(self, executor: Any, units: list[Unit], jobs: list, state: dict,
             scheduler: Any = None,
             on_result: Optional[Callable[[int, JobReturn], None]] = None,
             rung_ends: Optional[list] = None) -> dict[int, JobReturn]:
        """Every unit's JobReturns by job number, once its job ended; a job that ended without a
        result is submitted again (`max_retries`), then its trials fail. A job that returns a
        `RungEnd` goes into `rung_ends`; its trials that wait are not told to `on_result`."""
        returns: dict[int, JobReturn] = {}
        tries, signalled = [0] * len(units), [0] * len(units)
        pending = dict(enumerate(jobs))
        watch = JobWatch(self._EXECUTOR == "slurm", grace_s=2 * self.poll_s)
        while pending:
            for u, outcome in watch.poll(pending).items():
                job = pending.pop(u)
                waiting: Sequence[int] = ()
                if isinstance(outcome, RungEnd):
                    assert rung_ends is not None, "a RungEnd from a job not trained by rung"
                    rung_ends.append(outcome)
                    outcome, waiting = outcome.returns, outcome.waiting
                if isinstance(outcome, list):
                    for (num, _), ret in zip(units[u], outcome, strict=True):
                        returns[num] = ret
                        if on_result is not None and num not in waiting:
                            on_result(num, ret)
                    continue
                nums = [num for num, _ in units[u]]
                if isinstance(outcome, Signalled):
                    signalled[u] += 1
                    if signalled[u] <= MAX_SIGNALLED:
                        log.warning("submitit job %s (trials %s) stopped at an epoch boundary on "
                                    "%s before its time limit: submitting it again, its trials "
                                    "continue from their checkpoints (%d of at most %d)",
                                    job.job_id, nums, outcome.signal, signalled[u],
                                    MAX_SIGNALLED)
                        pending[u] = executor.submit(self, units[u], state, scheduler)
                        continue
                    outcome = f"stopped by {outcome.signal} {signalled[u]} times"
                if tries[u] < self.max_retries:
                    tries[u] += 1
                    log.warning("submitit job %s (trials %s) ended without a result (%s): "
                                "submitting it again, retry %d of %d", job.job_id, nums,
                                outcome, tries[u], self.max_retries)
                    pending[u] = executor.submit(self, units[u], state, scheduler)
                else:
                    log.error("submitit job %s (trials %s) ended without a result (%s) after "
                              "%d retries: its trials fail", job.job_id, nums, outcome, tries[u])
                    returns.update({num: _failed(o, outcome) for num, o in units[u]})
            if pending:
                time.sleep(self.poll_s)
        return returns


class HpjaxSlurmImpl(HpjaxSubmititImpl):
    _EXECUTOR = "slurm"


class HpjaxLocalImpl(HpjaxSubmititImpl):
    _EXECUTOR = "local"


IMPLS = {"slurm": HpjaxSlurmImpl, "local": HpjaxLocalImpl}
