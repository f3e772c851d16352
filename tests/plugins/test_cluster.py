"""Sweeps on a real one-node SLURM cluster and on a PostgreSQL study shared by several workers.

`scripts/local_cluster.sh` starts both (CI runs it before the tests). Without them these tests
are skipped on a developer's machine, and fail under CI.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from omegaconf import OmegaConf

from helpers import (
    PG_URL,
    SMALL_MLP,
    KillAtJob,
    child_env,
    run_main,
)

# The one-node cluster's two CPUs take one test's jobs at a time: its tests run one after another
# on one pytest worker.
one_at_a_time = pytest.mark.xdist_group("slurm")


def objectives(sweep: Path) -> dict:
    """{overrides of a trial: its objective} from summary.csv."""
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in rows[0] if k.startswith(("optimizer.", "train.seed"))]
    return {tuple(r[k] for k in keys): float(r["objective"]) for r in rows}


def side_by_side(runs: dict, cwd: Path, here: tuple = ()) -> dict:
    """Runs `hpjax -m <overrides>` for each named list of overrides at once (most of a cluster
    sweep's time is waiting for its jobs), those named in `here` in this process meanwhile;
    returns each one's sweep directory."""
    from helpers import multirun

    exe = str(Path(sys.executable).parent / "hpjax")
    procs = {name: subprocess.Popen([exe, "-m", *overrides, f"hydra.sweep.dir={name}"],
                                    cwd=cwd, stdout=open(cwd / f"{name}.log", "w"),
                                    stderr=subprocess.STDOUT, env=child_env())
             for name, overrides in runs.items() if name not in here}
    for name in here:
        multirun(runs[name], cwd / name)
    for name, proc in procs.items():
        assert proc.wait(timeout=300) == 0, (cwd / f"{name}.log").read_text()[-3000:]
    return {name: cwd / name for name in runs}


# two trials: hpjax_slurm's 1 + 2 SLURM jobs and Hydra's submitit_slurm's 1 (of the first trial:
# Hydra's launcher is one job per trial whatever the count) take the one-node cluster's 2 CPUs
# in 2 rounds
GRID = ["optimizer.lr=0.003,0.01", "train.seed=1", "activation=relu", "train.epochs=3",
        "train.early_stopping.patience=null", *SMALL_MLP]
FIRST = ["optimizer.lr=0.003", *GRID[1:]]


@one_at_a_time
@pytest.mark.usefixtures("unset_version_base")
def test_a_sweep_through_slurm_gives_the_local_results(slurm, tmp_path, jobs_share_the_cache):
    runs = {"basic": ["hydra/launcher=basic", *GRID], "vmap": ["hydra/launcher=vmap", *GRID],
            "slurm_population": ["hydra/launcher=hpjax_slurm", *GRID],
            "slurm_per_trial": ["hydra/launcher=hpjax_slurm", "hydra.launcher.vectorize=false",
                                *GRID],
            "submitit_slurm": ["hydra/launcher=submitit_slurm", *FIRST]}
    # the local references train in this process while the SLURM drivers wait for their jobs;
    # then the driver of one SLURM job per trial runs here (its 2 jobs take the cluster's second
    # round anyway, after the population's and submitit_slurm's)
    found = {name: objectives(sweep) for name, sweep in side_by_side(
        runs, tmp_path, here=("basic", "vmap", "slurm_per_trial")).items()}
    assert all(len(objectives_) == 2 for name, objectives_ in found.items()
               if name != "submitit_slurm")
    # one SLURM job per trial runs what the basic launcher runs: bit for bit the same numbers
    assert found["slurm_per_trial"] == found["basic"]
    [(first, objective)] = found["submitit_slurm"].items()
    assert first in found["basic"] and found["basic"][first] == objective
    # one SLURM job per population runs what the vmap launcher runs, bit for bit
    assert found["slurm_population"] == found["vmap"]
    def slurm_jobs(name: str) -> int:
        return len(list((tmp_path / name / ".submitit").rglob("*_result.pkl")))

    assert slurm_jobs("slurm_population") == 1  # the 2 trials trained as one SLURM job
    assert slurm_jobs("slurm_per_trial") == 2 and slurm_jobs("submitit_slurm") == 1
    hydra_yaml = OmegaConf.load(tmp_path / "slurm_population" / "0" / ".hydra" / "hydra.yaml")
    assert hydra_yaml.hydra.launcher._target_ == \
        "hydra_plugins.hpjax_submitit.launcher.HpjaxSlurmLauncher"


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _in_a_thread(watch) -> threading.Thread:
    """`watch()` in a thread of its own, started; its exception, if any, raised by `join()`."""
    class Watch(threading.Thread):
        error = None

        def run(self) -> None:
            try:
                watch()
            except BaseException as e:  # noqa: BLE001 (handed to the test in join)
                self.error = e

        def join(self, timeout=None) -> None:
            super().join(timeout)
            if self.error is not None:
                raise self.error

    thread = Watch(daemon=True)
    thread.start()
    return thread


@one_at_a_time
def test_scancel_of_a_running_trial_is_retried_from_its_checkpoint(slurm, tmp_path,
                                                                   jobs_share_the_cache):
    # An epoch takes 0.1-0.4 s: the 45 epochs after the cancel outlast the local cluster's
    # KillWait (1 s), in which the job ignores the SIGTERM (submitit's handler) before SIGKILL
    # ends it; the job run again trains the epochs after its last checkpoint.
    args = ["-m", "hydra/launcher=hpjax_slurm", "optimizer.lr=0.003", "activation=relu",
            "model.width=512", "train.epochs=50", "train.checkpoint_every=5",
            "train.early_stopping.patience=null", "hydra.sweep.dir=sweep"]
    checkpoints = tmp_path / "sweep" / "0" / "checkpoints"

    def saved() -> list:
        return [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] \
            if checkpoints.is_dir() else []

    def cancel_after_epoch_5() -> None:
        _wait_for(lambda: max(saved(), default=0) >= 5, 120, "the checkpoint of epoch 5")
        job = next((tmp_path / "sweep" / ".submitit").rglob("*_submitted.pkl")).parent.name
        job_ids.append(job)
        subprocess.run(["scancel", job], check=True)

    # the driver (which trains nothing) in this process, the cancel from a thread meanwhile
    job_ids: list = []
    watch = _in_a_thread(cancel_after_epoch_5)
    ran = run_main(args, tmp_path)
    watch.join()
    [job_id], out = job_ids, ran.stdout + ran.stderr
    assert ran.returncode == 0, out[-3000:]
    assert re.search(rf"submitit job {job_id}\S* \(trials \[0\]\) ended without a result "
                     r"\(SLURM state CANCELLED\S*\): submitting it again, retry 1 of 2", out), out
    result = json.loads((tmp_path / "sweep" / "0" / "result.json").read_text())
    assert result["status"] == "ok" and result["epochs_run"] == 50
    assert result["launcher"] == "hpjax_slurm (population)"
    assert 5 <= result["resumed_from_epoch"] < 50  # the epochs before: not trained again
    rows = [json.loads(r) for r in (tmp_path / "sweep" / "0" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 51))  # continuous across the restart


@one_at_a_time
def test_a_killed_driver_reruns_only_the_missing_trials(slurm, tmp_path, jobs_share_the_cache):
    args = ["-m", "hydra/sweeper=hpjax", "hydra/launcher=hpjax_slurm",
            "hydra.sweeper.algorithm=random", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.batch_size=2", "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
            # the second batch's trials stay RUNNING until the driver collects its job (its
            # start alone takes seconds): few epochs suffice to find the driver waiting
            "train.epochs=20", "train.early_stopping.patience=null", *SMALL_MLP,
            "hydra.sweep.dir=sweep"]
    sweep = tmp_path / "sweep"
    log = tmp_path / "driver.log"
    driver = subprocess.Popen([str(Path(sys.executable).parent / "hpjax"), *args],
                              cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                              env=child_env())

    def study():
        storage = optuna.storages.RDBStorage(f"sqlite:///{sweep / 'study.db'}",
                                             skip_table_creation=True)
        return optuna.load_study(study_name="hpjax", storage=storage)

    def second_batch_submitted() -> bool:
        # A reader opening the database before the driver made the study could race it
        # (Optuna writes its schema version on opening): read once the driver says it is there.
        if "study 'hpjax' in" not in log.read_text() or len(list(
                (sweep / ".submitit").rglob("*_submitted.pkl"))) < 2:
            return False  # the study opened only when it may be time (every 0.2 s cost 4 s)
        # the driver frozen while we look: the second batch's job may end, its trials cannot
        # be told (a short job could otherwise end and be told between two looks)
        driver.send_signal(signal.SIGSTOP)
        try:
            states = [t.state.name for t in study().get_trials()]
        except (KeyError, sqlalchemy.exc.SQLAlchemyError,
                optuna.exceptions.StorageInternalError):  # no study or no tables yet
            states = []
        if states.count("COMPLETE") == 2 and states.count("RUNNING") == 2 and len(list(
                (sweep / ".submitit").rglob("*_submitted.pkl"))) == 2:
            return True
        driver.send_signal(signal.SIGCONT)
        return False

    _wait_for(second_batch_submitted, 180, "the second batch's SLURM job")
    driver.send_signal(signal.SIGKILL)  # (stopped: it dies as it is)
    driver.wait()
    before = study().get_trials()
    out = run_main(args, tmp_path)  # the driver again, in this process: it trains nothing
    assert out.returncode == 0, out.stderr[-3000:]
    after = study().get_trials()
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    # the killed batch's SLURM jobs either finished on their own (their results are taken) or
    # run again with the same parameters: never more trials than the missing ones
    assert len(after) - len(before) <= 2
    assert len({t.params["optimizer.lr"] for t in complete}) == 4


def test_hpjax_workers_on_postgres_rerun_a_killed_workers_trial_and_hide_the_password(
        postgres, tmp_path):
    """Two `hpjax -m` workers on one PostgreSQL study, one killed with a trial trained but not
    told. The eight forked workers of test_faults.py (a task without JAX, Hydra's basic launcher)
    test that exactly n trials run and that a dead worker's trial runs again, on PostgreSQL too;
    here is what they do not: hpjax's own command and training, each trial in its own job
    directory, the rerun's log line, and the password kept out of every file and output."""
    study_name = f"workers-{os.getpid()}-{time.time_ns()}"
    args = ["-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
            "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={PG_URL}",
            f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.heartbeat_interval=1",
            "hydra.sweeper.poll_s=0.5", "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
            "data=iris", "model.width=8", "model.num_layers=1", "train.epochs=20",
            "train.early_stopping.patience=null"]
    log = tmp_path / "worker0.log"
    # a sweep directory each: a worker's epochs go to its own populations.log, not its terminal
    sweeps = [tmp_path / f"sweep{i}" for i in range(2)]
    # Worker 0, a process, SIGKILLs itself as its first trial's job starts (helpers.KillAtJob):
    # the trial trained, still running in the study, its heartbeats stopped. Worker 1 runs in
    # this process (its imports paid).
    worker0 = subprocess.Popen(
        [str(Path(sys.executable).parent / "hpjax"), *args, f"hydra.sweep.dir={sweeps[0]}",
         *KillAtJob.overrides()], cwd=tmp_path, stdout=open(log, "w"),
        stderr=subprocess.STDOUT, env=KillAtJob.env())
    # Only the workers create the tables: a reader that did too would race them.
    def study() -> optuna.Study:
        storage = optuna.storages.RDBStorage(PG_URL, skip_table_creation=True)
        return optuna.load_study(study_name=study_name, storage=storage)

    # Opening a storage stamps Optuna's schema version into a database that has none yet (even
    # with skip_table_creation): worker 1 waits until worker 0 has opened the study (it made the
    # tables)
    _wait_for(lambda: f"study {study_name!r} in" in log.read_text(), 180,
              "worker 0 to open the study")
    worker1 = run_main([*args, f"hydra.sweep.dir={sweeps[1]}"], tmp_path)
    assert worker0.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
    killed = [int(n) for n in re.findall(r"\t#(\d+) : ", log.read_text())]
    assert len(killed) == 1, log.read_text()[-3000:]  # the trial it was given, and no other
    output = worker1.stdout + worker1.stderr
    assert worker1.returncode == 0, output[-3000:]
    trials = study().get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and len({t.number for t in complete}) == 3
    for t in complete:  # each trial ran once, in its own directory, all in worker 1's
        assert (sweeps[1] / str(t.number) / "result.json").exists()
    assert not list(sweeps[0].rglob("result.json"))
    failed = [t.number for t in trials if t.state.name == "FAIL"]
    assert failed == killed  # the killed worker's trial, run again by the other:
    retry = next(c for c in complete if c.user_attrs.get("retry_of") == killed[0])
    assert retry.params == next(t.params for t in trials if t.number == killed[0])
    assert f"trial {killed[0]} stopped reporting: marked failed, its parameters run again " \
        "(retry 1 of 2)" in output
    # the password is in no file of the sweep and in no worker's output
    everything = log.read_text() + output
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".csv", ".json", ".log", ".jsonl"):
            everything += path.read_text()
    assert ":hpjax@" not in everything
    assert "postgresql://hpjax:***@localhost:5432/hpjax" in output


def test_hydras_submitit_local_launcher_gives_the_basic_launchers_results(tmp_path,
                                                                          jobs_share_the_cache):
    """Hydra's `submitit_local` with hpjax's task (no SLURM needed): its job, a process of its
    own that gets the run's compilation cache, trains what the basic launcher trains in this
    process. hpjax's own `hpjax_submitit_local` is test_fidelity's bracket in one job."""
    from helpers import multirun

    # one trial, one job: each job is a process (its imports and programs paid again); the
    # SLURM sweep's first trial, its programs
    found = {}
    for name in ("basic", "submitit_local"):
        multirun([f"hydra/launcher={name}", *FIRST], tmp_path / name)
        found[name] = objectives(tmp_path / name)
    assert found["submitit_local"] == found["basic"] and len(found["basic"]) == 1
    assert len(list((tmp_path / "submitit_local" / ".submitit").rglob("*_result.pkl"))) == 1


@one_at_a_time
@pytest.mark.usefixtures("unset_version_base")
def test_a_bracket_split_by_a_static_key_halves_as_one_on_slurm(slurm, tmp_path,
                                                                 jobs_share_the_cache):
    """`test_fidelity`'s static-key sweep as one successive-halving bracket (`algorithm=sha`)
    through `hpjax_slurm`: its two populations (widths 4 and 8) train in a SLURM job each, rung
    by rung, the driver deciding each rung over the whole bracket, so its epochs run are the
    bracket table's exactly."""
    import logging

    from helpers import STATIC, epochs_run, multirun, trials_in

    sweep = tmp_path / "sha"
    lines: list = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("hydra_plugins.hpjax_submitit._rungs")
    logger.addHandler(handler)
    # R = 4, eta = 2: sha's one bracket (s_max = 2) is 4x1 2x2 1x4, so 2 trials end at epoch 1,
    # 1 at epoch 2 and 1 at epoch 4: a multi-rung bracket; one chunk per width (STATIC's chunks
    # of one trial would be 4 SLURM jobs)
    try:
        multirun([*[o for o in STATIC if not o.startswith("hydra.launcher.max_population")],
                  "hydra.sweeper.algorithm=sha", "hydra/launcher=hpjax_slurm",
                  "hydra.launcher.poll_s=0.5"], sweep)
    finally:
        logger.removeHandler(handler)
    assert epochs_run(sweep) == {1: 2, 2: 1, 4: 1}
    # the bracket trains as populations of both widths, in a SLURM job each, then the
    # promoted trials' populations from their checkpoints
    assert {int(t.params["model.width"]) for t in trials_in(sweep)} == {4, 8}
    rounds = [line for line in lines if line.startswith("round ")]
    assert rounds[0] == "round 1 of the bracket: 4 trials in 2 submitit jobs"
    jobs = sum(int(re.search(r"in (\d+) submitit job", line)[1]) for line in rounds)
    assert len(list((sweep / ".submitit").rglob("*_result.pkl"))) == jobs >= 3
