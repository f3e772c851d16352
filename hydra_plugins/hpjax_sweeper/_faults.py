"""Trials whose worker stopped: heartbeats while a batch runs, stale trials marked failed, and
their parameters run again (with their checkpoints).

With heartbeats (RDB storage) this is Optuna's own mechanism: the storage records them, and
`optuna.storages.fail_stale_trials` fails the trials whose heartbeat is older than the grace
period and calls the storage's stale-trial callback, `retry`. Without heartbeats, one driver per
study: every trial still RUNNING when a sweep starts was left by a killed sweep.
"""

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

import hpjax.engine

from . import _storage
from ._storage import fresh_trials, storage_of

log = logging.getLogger(__name__)

# Tells a trial's result to the study: (study, trial id, result)
Tell = Callable[[optuna.Study, int, "hpjax.Result"], None]


def retry(study: optuna.Study, trial: FrozenTrial, max_retries: int) -> None:
    """A trial marked failed because its worker stopped (a FAIL without a `status` of its own,
    which does not count as finished): its parameters run again, up to `max_retries` times."""
    retries = trial.user_attrs.get("retries", 0)
    if retries >= max_retries or not trial.params:
        log.warning("trial %d stopped reporting: marked failed (%d retries, no more)",
                    trial.number, retries)
        return
    study.enqueue_trial(trial.params, user_attrs={"retries": retries + 1,
                                                  "retry_of": trial.number,
                                                  "retry_of_dir": trial.user_attrs.get("job_dir")})
    log.warning("trial %d stopped reporting: marked failed, its parameters run again "
                "(retry %d of %d)", trial.number, retries + 1, max_retries)


def optuna_heartbeats(study: optuna.Study) -> bool:
    """Whether the storage records Optuna's own heartbeats (an RDB storage with an interval)."""
    storage = storage_of(study)
    return isinstance(storage, optuna.storages.RDBStorage) and \
        storage.get_heartbeat_interval() is not None


def fail_stale(study: optuna.Study, heartbeats: bool, tell: Tell, max_retries: int,
               grace_period: Optional[int] = None) -> None:
    """Marks failed the trials whose worker stopped, and runs their parameters again: with
    heartbeats, those that stopped reporting; without, every running one. A running trial whose
    job wrote its result after all (a cluster job outlives its driver) is told instead.

    A journal file has no heartbeats of Optuna's: there, hpjax's workers record their own in
    each running trial (`HEARTBEAT`), and one older than `grace_period` seconds is stale."""
    if heartbeats and optuna_heartbeats(study):
        optuna.storages.fail_stale_trials(study)  # calls the storage's callback, `retry`
        return
    now, storage = time.time(), storage_of(study)
    for t in fresh_trials(study, (TrialState.RUNNING,)):
        if heartbeats:
            start = t.datetime_start.timestamp() if t.datetime_start else now
            if now - t.system_attrs.get(HEARTBEAT, start) <= (grace_period or 0):
                continue  # its worker is alive
        job_dir = t.user_attrs.get("job_dir")
        result = hpjax.engine.read_result(job_dir) if job_dir else None
        trial_id = _storage.trial_id(study, t)
        if result is not None:
            tell(study, trial_id, result)
            log.info("trial %d finished after its sweep was killed: result taken from %s",
                     t.number, job_dir)
            continue
        storage.set_trial_user_attr(trial_id, "status", "killed")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        retry(study, t, max_retries)


def first_heartbeats(study: optuna.Study, trials: list) -> None:
    """Each new trial's first heartbeat, written with its ask (in the ask's transaction on a
    database): Optuna never fails a RUNNING trial that has no heartbeat, so a worker killed
    between the ask and its heartbeat thread's first beat would leave it running for ever."""
    if optuna_heartbeats(study):
        storage = storage_of(study)
        for t in trials:
            storage.record_heartbeat(_storage.trial_id(study, t))


@contextmanager
def heartbeats(study: optuna.Study, trials: list,
               interval: Optional[int] = None) -> Iterator[None]:
    """Records the batch's heartbeats while it runs, as `Study.optimize` does for its trial, so
    that other workers know it is alive: Optuna's (an RDB storage), else hpjax's own every
    `interval` seconds (a journal file); nothing without heartbeats. One thread for the batch,
    which survives a database error (Optuna's own thread dies at the first one, silently
    leaving its trial to be failed as stale by another worker)."""
    storage = storage_of(study)
    if optuna_heartbeats(study):
        every = storage.get_heartbeat_interval()
        grace = storage.grace_period or 2 * every
        beat = storage.record_heartbeat
    elif interval:
        every, grace = interval, 2 * interval

        def beat(trial_id: int) -> None:
            storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
    else:
        yield
        return
    thread = _Heartbeat(beat, [_storage.trial_id(study, t) for t in trials], every, grace)
    thread.start()
    try:
        yield
    finally:
        thread.stop.set()
        thread.join()


HEARTBEAT = "hpjax:heartbeat"  # a trial's latest heartbeat (seconds since the epoch), journal


class _Heartbeat(threading.Thread):
    """A batch's heartbeats: `beat(trial id)` for each running trial every `interval` seconds.
    A database error is logged once and retried at the next beat; an outage longer than
    `grace` seconds (when other workers may fail these trials as stale and run them again) is
    logged as an error once, and the recovery as a line."""

    def __init__(self, beat: Callable[[int], None], trial_ids: list[int], interval: float,
                 grace: float) -> None:
        super().__init__(daemon=True, name="hpjax-heartbeat")
        self.beat, self.trial_ids, self.interval = beat, list(trial_ids), interval
        self.grace, self.stop = grace, threading.Event()
        self.last_ok = time.monotonic()  # the last beat recorded for all trials
        self.failing = False  # in an outage (its first failure logged)
        self.failures = 0  # failed beats, all outages
        self.past_grace = False  # this outage outlasted the grace period (logged)

    def run(self) -> None:
        while True:
            self._beat_all()
            if self.stop.wait(self.interval):
                return

    def _beat_all(self) -> None:
        error = None
        for trial_id in list(self.trial_ids):
            try:
                self.beat(trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                self.trial_ids.remove(trial_id)
            except Exception as e:  # noqa: BLE001  (the database's errors, whatever the driver)
                error = e
        now = time.monotonic()
        if error is None:
            if self.failing:
                log.warning("heartbeats recorded again after %.0f s without", now - self.last_ok)
            self.last_ok, self.failing, self.past_grace = now, False, False
            return
        self.failures += 1
        if not self.failing:
            self.failing = True
            log.warning("heartbeat of %d running trials failed (%s): retrying every %g s "
                        "(other workers fail them as stale after %g s without one)",
                        len(self.trial_ids), _one_line(error), self.interval, self.grace)
        elif now - self.last_ok >= self.grace and not self.past_grace:
            self.past_grace = True
            log.error("no heartbeat for %.0f s, beyond the grace period: another worker may "
                      "have failed these trials and run them again; their results here will "
                      "not be told (still retrying)", now - self.last_ok)


def _one_line(e: BaseException) -> str:
    """The error's first line, from its root cause (Optuna wraps the driver's error in a
    `StorageInternalError` that does not name it)."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def carry_checkpoints(trials: list) -> None:
    """A retried trial continues from the checkpoints of the run that stopped."""
    for t in trials:
        old, new = t.user_attrs.get("retry_of_dir"), t.user_attrs.get("job_dir")
        if old and new and (Path(old) / "checkpoints").is_dir():
            shutil.copytree(Path(old) / "checkpoints", Path(new) / "checkpoints",
                            dirs_exist_ok=True)
            log.info("trial %d continues trial %d from its checkpoints", t.number,
                     t.user_attrs["retry_of"])


@contextmanager
def none_left_running(study: optuna.Study, trials: list, max_retries: int,
                      tell: Tell) -> Iterator[None]:
    """No fault leaves a trial RUNNING: if the batch raises (an interrupt, a launcher's error),
    its trials that wrote a result are told it, and those still running are marked failed
    (`interrupted`, or `error` with the exception) and their parameters are enqueued to run
    again (from their checkpoints) when the sweep resumes."""
    try:
        yield
    except BaseException as e:
        status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "error"
        storage = storage_of(study)
        for t in trials:
            try:
                trial_id = _storage.trial_id(study, t)
                frozen = storage.get_trial(trial_id)
                if frozen.state != TrialState.RUNNING:
                    continue
                job_dir = frozen.user_attrs.get("job_dir")
                result = hpjax.engine.read_result(job_dir) if job_dir else None
                if result is not None:  # its population ended before the fault
                    tell(study, trial_id, result)
                    continue
                storage.set_trial_user_attr(trial_id, "status", status)
                if status == "error":
                    storage.set_trial_user_attr(trial_id, "error",
                                                f"{type(e).__name__}: {e}"[:500])
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
                retry(study, frozen, max_retries)
            except Exception as inner:  # noqa: BLE001  (the storage itself may be the fault)
                log.warning("trial %d could not be marked failed: %r", t.number, inner)
        raise


def _user_line(e: ValueError) -> str:
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip())


def disk_full(study: optuna.Study, trials: list, max_retries: int) -> None:
    """Stops the sweep after a batch whose trials could not write their files (status `disk`,
    told as failed, not counted toward n_trials): their parameters are enqueued to run again,
    and the sweep stops with exit code 5 instead of failing every trial after them."""
    storage = storage_of(study)
    frozen = [storage.get_trial(_storage.trial_id(study, t)) for t in trials]
    hit = [t for t in frozen if t.user_attrs.get("status") == "disk"]
    if not hit:
        return
    for t in hit:
        retry(study, t, max_retries)
    error = hit[0].user_attrs.get("error", "")
    hpjax.engine.stop(f"{error}: {len(hit)} trial{'s' if len(hit) > 1 else ''} could not "
                      "write their files and will run again; the sweep stopped, every "
                      "finished trial's files are kept: free space (or make it writable) and "
                      "run the same command again: it resumes", hpjax.engine.DISK_FAULT)


def interruptible(sweeper: Any, arguments: list[str]) -> Any:
    """Runs the sweep with SIGINT/SIGTERM deferred to the next epoch boundary; an interrupted
    sweep writes its summary (Hydra's end-of-sweep callbacks) and exits 128 + the signal
    (130, 143). Rerunning the command resumes it. A user error found on the way is one line
    and exit code 2, a full or read-only disk under the study one line and exit code 5
    (`hpjax.errors`)."""

    with hpjax.engine.defer_signals():
        try:
            return sweeper.sweep(arguments)
        except ValueError as e:  # a check of the user's values (is_user_error): one line
            if not hpjax.engine.is_user_error(e):
                raise
            hpjax.engine.stop(_user_line(e))
        except hpjax.engine.Interrupted as e:
            log.warning("sweep %s: its unfinished trials are marked failed (interrupted) and "
                        "run again, from their checkpoints, when the same command runs again", e)
            try:
                sweeper.hydra_context.callbacks.on_multirun_end(config=sweeper.config)
            finally:
                sys.exit(e.exit_code)
        except Exception as e:  # a full or read-only disk under the study: one line, exit 5
            fault = hpjax.engine.disk_fault(e)
            if fault is None:
                raise
            hpjax.engine.stop(f"{fault}: the sweep stopped, every finished trial's files are "
                              "kept; free space (or make it writable) and run the same command "
                              "again: it resumes", hpjax.engine.DISK_FAULT)
