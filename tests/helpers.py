"""Helpers the tests share: configs composed in process, `hpjax -m` in process or as a process,
the study and summary of a sweep, and whether the local SLURM cluster and PostgreSQL are up.

`tests/conftest.py` sets the environment (the run's JAX compilation cache, one device)
before anything here imports JAX; test modules import these by name (`from helpers import
multirun`): pytest puts tests/, conftest.py's folder, on sys.path.
"""

import contextlib
import csv
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback

from hpjax.cli import CONF_DIR
from hpjax.config import to_config

PG_URL = "postgresql://hpjax:hpjax@localhost:5432/hpjax"

# One iris population of 8 (4 epochs): the report tests' sweeps share its programs.
REPORT_GRID = ["data=iris", "train.epochs=4", "train.early_stopping.patience=null",
               "optimizer.lr=1e-3,1e-2,3e-2,1e-1", "activation=relu,tanh"]

# Small runs for tests: the default config minus most epochs.
FAST = ["train.epochs=5", "train.early_stopping.patience=null"]

# A small MLP (one hidden layer of 32 units) for tests whose claim does not depend on the model's
# size: less to trace, compile and run than the default's two layers of 128.
SMALL_MLP = ["model.width=32", "model.num_layers=1"]


def compose_config(overrides=(), validate=True, return_hydra_config=False):
    """The config `hpjax <overrides>` would run, composed in-process."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides),
                      return_hydra_config=return_hydra_config)
    return to_config(cfg) if validate else cfg


def sgd_configs(lrs, extra=()):
    """Configs of a small population: SGD at each learning rate, 4 epochs, no early stopping."""
    return [compose_config(["optimizer=sgd", f"optimizer.lr={lr}", "train.epochs=4",
                            "train.early_stopping.patience=null", *extra]) for lr in lrs]


def multirun(overrides, sweep_dir):
    """`hpjax -m <overrides>` in this process: Hydra's own multirun with hpjax's task."""
    from hpjax.api import hydra_session
    from hpjax.app import train_task

    with hydra_session(keep_logging=False) as hydra_:  # tests watch the jobs' loggers
        return hydra_.multirun(config_name="config", task_function=train_task,
                               overrides=[*overrides, f"hydra.sweep.dir={sweep_dir}"],
                               with_log_configuration=False)


def child_env(env=None):
    """The environment of a process a test starts: this one's (with the run's compilation cache:
    `tests/conftest.py`), and `env` on top (a None there removes the variable)."""
    merged = {**os.environ, **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


def run_cli(args, cwd, module=False, env=None):
    """Runs `hpjax <args>` (or `python -m hpjax`) in a fresh process; returns CompletedProcess."""
    script = str(Path(sys.executable).parent / "hpjax")
    exe = [sys.executable, "-m", "hpjax"] if module else [script]
    return subprocess.run(exe + list(args), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=child_env(env))


@dataclass
class Ran:
    """What `run_main` saw: as subprocess.CompletedProcess has it."""

    returncode: int
    stdout: str
    stderr: str


def run_main(args, cwd, module=False) -> Ran:
    """`hpjax <args>` in this process: the command's own entry point (`hpjax.app.main`) under
    its argv and working directory, its exit code and output; logging as it was after. For what
    does not test the process boundary itself: no imports and compiles paid again (6-9 s of CPU
    a process). `module`: `python -m hpjax <args>`, hpjax/__main__.py run as Python runs it."""
    import runpy

    from hpjax.api import _own_logging
    from hpjax.app import main

    if module:
        def main():
            runpy.run_module("hpjax", run_name="__main__", alter_sys=True)

    out, err, code = io.StringIO(), io.StringIO(), 0
    argv, here = sys.argv, os.getcwd()
    try:
        sys.argv = ["hpjax", *map(str, args)]
        os.chdir(cwd)
        with _own_logging(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        sys.argv = argv
        os.chdir(here)
    return Ran(code, out.getvalue(), err.getvalue())


def read_summary(sweep):
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


def trials_in(sweep, state=None):
    import optuna

    # Only the sweep creates the tables: a reader that did too would race it at its start.
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep / 'study.db'}",
                                         skip_table_creation=True)
    study = optuna.load_study(study_name="hpjax", storage=storage)
    return [t for t in study.get_trials() if state is None or t.state == state]


# Node states in which a job can start or will once the node's jobs end; sinfo marks a state with
# a suffix (`idle*`: not responding, `mixed~`: powered down, ...).
_SLURM_USABLE = ("idle", "mixed", "allocated", "completing", "planned")
_seen_up: set = set()


def _service(name: str, probe, patience: float = 30.0) -> str | None:
    """None when `probe()` (a reason it is down, or None) says the service is up; else the last
    reason. Under CI, or once it was seen up in this process, a service that is down is asked
    again for `patience` seconds: a cluster busy with the tests beside it answers late or shows
    a node between jobs, and a test failed for that would say nothing about hpjax."""
    deadline = time.monotonic() + (patience if os.environ.get("CI") or name in _seen_up else 0)
    while (why := probe()) is not None and time.monotonic() < deadline:
        time.sleep(1.0)
    if why is None:
        _seen_up.add(name)
    return why


def _sinfo() -> str | None:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    states = out.stdout.split()
    if out.returncode == 0 and any(s.rstrip("*~#!%$@^-+") in _SLURM_USABLE for s in states):
        return None
    return f"sinfo exited {out.returncode}: {(out.stdout + out.stderr).strip() or 'no nodes'}"


def slurm_down() -> str | None:
    """Why the local SLURM cluster cannot run a job, or None when it can."""
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    return _service("slurm", _sinfo)


def _pg() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=5).close()
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}".strip()


def postgres_down() -> str | None:
    """Why PostgreSQL at PG_URL does not take a connection, or None when it does."""
    return _service("postgres", _pg)


def require(down: str | None, what: str) -> None:
    """Skips a test whose service is down (`down`: why) on a developer's machine; under CI,
    fails it."""
    if down is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not available ({down}): .ci/run sets it up with "
                        "scripts/local_cluster.sh")
        pytest.skip(f"{what} is not available ({down}): set it up with scripts/local_cluster.sh")


def need(module: str, extra: str = "test"):
    """`module`, imported; a test whose optional package is not installed skips on a developer's
    machine and fails under CI (which installs every extra). A package that is installed but does
    not import raises, wherever: pytest.importorskip would skip on that broken install too."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or module != e.name and not module.startswith(e.name + "."):
            raise  # the package is there, one of its own dependencies is not: a broken install
        how = f"pip install -e '.[{extra}]'"
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed under CI: .ci/run runs {how}")
        pytest.skip(f"{module} is not installed: {how}")


@contextlib.contextmanager
def small_fs(path, size_kb=4096, read_only=False):
    """A real file system of `size_kb` at `path` (a tmpfs; mounting needs root, as here and in
    CI); yields whether it was mounted. Where it cannot be (not root, no mount; or
    HPJAX_TEST_INJECT_DISK=1), a writable one is simulated (`_injected_full_disk`: the errno
    injected into every write under `path` while it is full), so the same assertions run; a
    read-only one is left to the test. Under CI not mounting is a failure: a real file system
    is what the faults are tested on."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    mounted = not os.environ.get("HPJAX_TEST_INJECT_DISK") and shutil.which(
        "mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
        capture_output=True).returncode == 0
    assert mounted or not os.environ.get("CI"), f"cannot mount a tmpfs at {path} under CI"
    try:
        if mounted or read_only:
            yield mounted
        else:
            with _injected_full_disk(path):
                yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill_disk(root) -> None:
    """Fills the small file system at `root` (`small_fs`): a file `filler` written until the
    disk is full; where it is simulated, the filler alone makes it full. Removing the filler
    frees the space."""
    filler = os.path.join(os.fspath(root), "filler")
    if os.path.abspath(os.fspath(root)) in _INJECTED:
        open(filler, "ab").close()
        return
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


_INJECTED: set = set()  # roots of simulated small file systems (no tmpfs could be mounted)


def _is_full(path) -> bool:
    """Whether `path` lies under a simulated small file system whose filler exists."""
    try:
        p = os.path.abspath(os.fspath(path))
    except TypeError:  # a file descriptor
        return False
    return any(p.startswith(root + os.sep) and p != os.path.join(root, "filler")
               and os.path.exists(os.path.join(root, "filler")) for root in _INJECTED)


@contextlib.contextmanager
def _injected_full_disk(path):
    """A full disk at `path` as its writers meet it, where none can be mounted: while
    `path/filler` exists, Python's `open` and `os.open` for writing, an Orbax checkpoint's save
    and an SQLite database's writes under `path` fail as a full disk fails them (`OSError`
    ENOSPC naming the file; SQLite's `database or disk is full`)."""
    import builtins
    import errno
    import io
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import hpjax.engine.checkpoint as ckpt

    real_open, real_os_open, real_save = builtins.open, os.open, ckpt.save

    def enospc(file):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(mode, str) and any(c in mode for c in "wax+") and _is_full(file):
            raise enospc(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(file, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _is_full(file):
            raise enospc(file)
        return real_os_open(file, flags, *args, **kwargs)

    def fake_save(directory, *args, **kwargs):
        if _is_full(os.path.join(os.fspath(directory), "x")):
            raise enospc(directory)
        return real_save(directory, *args, **kwargs)

    def sqlite_write(conn, cursor, statement, parameters, context, executemany):
        database = conn.engine.url.database
        if database and _is_full(database) and not statement.lstrip().upper().startswith(
                ("SELECT", "PRAGMA")):
            raise sqlite3.OperationalError("database or disk is full")

    root = os.path.abspath(os.fspath(path))
    _INJECTED.add(root)
    builtins.open = io.open = fake_open
    os.open, ckpt.save = fake_os_open, fake_save
    event.listen(Engine, "before_cursor_execute", sqlite_write)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", sqlite_write)
        builtins.open = io.open = real_open
        os.open, ckpt.save = real_os_open, real_save
        _INJECTED.discard(root)


class FillDisk(Callback):
    """A Hydra callback that fills the file system of `path` when job `job` starts (`at=start`:
    its own files then fail) or ends (`at=end`: what the sweep writes next fails), as a disk
    filling up under a sweep does: `+hydra.callbacks.fill._target_=helpers.FillDisk`."""

    def __init__(self, path: str, job: int, at: str = "start") -> None:
        self.path, self.job, self.at = Path(path), job, at

    def _fill(self, config) -> None:
        if config.hydra.job.num == self.job:
            fill_disk(self.path)

    def on_job_start(self, config, **kwargs) -> None:
        if self.at == "start":
            self._fill(config)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if self.at == "end":
            self._fill(config)


# Hyperband R = 4, eta = 2 over a static axis: brackets 4x1 2x2 1x4; 3x2 1x4; 3x4. Each trial
# ends at its rung: 2 at epoch 1, 3 at 2, 5 at 4.
BRACKETS_4 = {1: 2, 2: 3, 4: 5}
STATIC = ["data=iris", "optimizer=sgd", "train.batch_size=64", "train.epochs=4",
          "train.early_stopping.patience=null", "hydra/sweeper=hpjax",
          "hydra.sweeper.algorithm=hyperband", "hydra.sweeper.n_trials=null",
          "hydra.sweeper.eta=2", "hydra.sweeper.seed=0", "model.num_layers=1",
          # a static key: each bracket trains as one population per width, and, in chunks of
          # one trial, as many populations per width: every population has size 1, so each
          # width compiles once (chunks of 4 compacted to sizes 2 and 1 as trials stopped, each
          # size a compile) and the rung still waits for populations of both widths
          "model.width=choice(4, 8)", "optimizer.lr=interval(0.02, 0.1)",
          "hydra.launcher.max_population=1"]


def epochs_run(sweep):
    """How many trials of the sweep ran each number of epochs."""
    import collections

    return collections.Counter(
        json.loads((sweep / str(t.number) / "result.json").read_text())["epochs_run"]
        for t in trials_in(sweep))


class Killed(Exception):
    """A process killed mid-run, as a test raises it from a population's epoch callback."""


def kill_at(epoch: int):
    """An `on_epoch` callback that raises `Killed` when the population ends `epoch`."""
    def on_epoch(_: int, row: dict) -> None:
        if row["epoch"] == epoch:
            raise Killed

    return on_epoch


def killed_in_epoch_3_and_resumed(cfgs, tmp_path):
    """Trains the population `cfgs` whole; again with a checkpoint per member, killed in epoch
    3; and once more from those checkpoints. Returns (whole, the checkpoints' JSON metadata of
    member 0 at epoch 2, resumed), after checking that each resumed member ends exactly as its
    uninterrupted run did."""
    import json

    from hpjax.engine.loop import train_population

    dirs = [str(tmp_path / "a"), str(tmp_path / "b")][:len(cfgs)]
    whole = train_population(cfgs)
    try:
        train_population(cfgs, on_epoch=kill_at(3), checkpoint_dirs=dirs)
        raise AssertionError("the population was not killed in epoch 3")
    except Killed:
        pass
    saved = [json.loads(p.read_text()) for p in (tmp_path / "a" / "2").rglob("*")
             if p.is_file() and p.read_text(errors="ignore").startswith("{")]
    again = train_population(cfgs, checkpoint_dirs=dirs)
    for k in range(len(cfgs)):
        assert again[k].result.resumed_from_epoch == 2
        assert rows_without_time(again[k].rows) == rows_without_time(whole[k].rows)
        assert again[k].result.test == whole[k].result.test
    return whole, saved, again


def rows_without_time(rows):
    """Epoch rows without their wall time, the one field that differs between two runs."""
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


class KillAtJob(Callback):
    """A Hydra callback that SIGKILLs its own process as job `job` starts (without `job`, the
    first job it starts), the jobs before it told: a sweep killed mid-run at a known point, as
    `kill -9` would. An `hpjax` process gets it with `KillAtJob.overrides(job)` and
    `env=KillAtJob.env()` (tests/, where this class is, on its PYTHONPATH)."""

    def __init__(self, job: int | None = None) -> None:
        self.job = job

    @staticmethod
    def overrides(job: int | None = None) -> list[str]:
        return ["+hydra.callbacks.kill._target_=helpers.KillAtJob",
                *([f"+hydra.callbacks.kill.job={job}"] if job is not None else [])]

    @staticmethod
    def env() -> dict:
        return child_env({"PYTHONPATH": os.pathsep.join(filter(None, [
            str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))})

    def on_job_start(self, config, **kwargs) -> None:
        import signal

        if self.job is None or config.hydra.job.num == self.job:
            os.kill(os.getpid(), signal.SIGKILL)
