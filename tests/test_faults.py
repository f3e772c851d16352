"""Faults a real sweep meets in its first week, one test per kind (issue 13): each failed before."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution

from helpers import child_env, compose_config, multirun, sgd_configs
from hpjax import results
from hpjax.cli import CONF_DIR, sweep_argv
from hpjax.engine import batch
from hpjax.engine.progress import SweepProgress
from hpjax.report import report
from hydra_plugins.hpjax_sweeper import _faults, _space, _storage
from hydra_plugins.hpjax_sweeper._search import parse

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A tiny trial: iris, a hidden layer of 8, 2 epochs.
TINY = ["data=iris", "model.width=8", "train.epochs=2", "train.early_stopping.patience=null"]
HPJAX = ["hydra/sweeper=hpjax", *TINY]


def sweep(overrides, sweep_dir):
    """`hpjax -m <overrides>` in this process, with the command line's default-grid rule."""
    return multirun(sweep_argv(["-m", *overrides])[1:], sweep_dir)


def study_trials(sweep_dir):
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep_dir / 'study.db'}",
                                         skip_table_creation=True)
    return optuna.load_study(study_name="hpjax", storage=storage).get_trials()


def test_a_conditional_key_is_asked_only_under_the_choices_that_have_it(tmp_path):
    sweep([*HPJAX, "hydra.sweeper.n_trials=6", "hydra.sweeper.batch_size=6",
           "optimizer=choice(adam, sgd)", "optimizer.b1=interval(0.8, 0.95)"], tmp_path / "s")
    trials = study_trials(tmp_path / "s")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert {t.params["optimizer"] for t in trials} == {"adam", "sgd"}
    for t in trials:
        assert ("optimizer.b1" in t.params) == (t.params["optimizer"] == "adam")
        ran = OmegaConf.load(tmp_path / "s" / str(t.number) / ".hydra" / "config.yaml")
        if "optimizer.b1" in t.params:
            assert ran.optimizer.b1 == pytest.approx(t.params["optimizer.b1"], rel=1e-5)


def is_group(key):
    return (CONF_DIR / key).is_dir()


def test_a_conditional_grid_multiplies_only_its_own_choices_and_a_key_of_no_choice_fails():
    compose = lambda overrides: compose_config(overrides, validate=False)  # noqa: E731
    space = _space.check(parse(["optimizer=adam,sgd", "optimizer.b1=0.8,0.9"]),
                         compose=compose, is_group=is_group)
    assert space.grid() == [{"optimizer": "adam", "optimizer.b1": "0.8"},
                            {"optimizer": "adam", "optimizer.b1": "0.9"}, {"optimizer": "sgd"}]
    assert space.overrides({"optimizer": "sgd"}) == ["optimizer=sgd"]
    with pytest.raises(_space.SweepError, match="optimizer.b3: no such key in the config under "
                       "any choice of optimizer"):
        _space.check(parse(["optimizer=adam,sgd", "optimizer.b3=0.8,0.9"]), compose=compose,
                     is_group=is_group)


def test_a_trial_whose_program_fails_fails_alone_and_its_population_trains(tmp_path,
                                                                           breaks_on_seed_7):
    """A population whose program fails for one trial's value (one that passes the schema: here
    seed 7 stands for it) is halved until that trial fails alone; the others train."""
    sweep([*HPJAX, "hydra.sweeper.algorithm=grid", "hydra.sweeper.n_trials=null",
           "hydra.sweeper.batch_size=3", "train.seed=choice(0, 7, 1)"], tmp_path / "s")
    trials = study_trials(tmp_path / "s")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    error = "FloatingPointError: the program broke on seed 7"
    assert trials[1].user_attrs["status"] == "failed" and trials[1].user_attrs["error"] == error
    saved = json.loads((tmp_path / "s" / "1" / "result.json").read_text())
    assert (saved["status"], saved["error"]) == ("failed", error)


def test_each_population_ends_its_jobs_as_soon_as_it_has_trained():
    events = []

    def train(cfgs, **kw):
        events.append(("train", len(cfgs)))
        raise ValueError("boom") if len(cfgs) > 1 else RuntimeError("alone")

    cfgs = sgd_configs([0.1]) + [compose_config(["optimizer=sgd", "model.width=16"])]
    batch.train_jobs([batch.Job(c, "") for c in cfgs], train=train,
                     progress=SweepProgress(live=False),
                     on_ended=lambda ends: events.append(("ended", sorted(ends))))
    assert events == [("train", 1), ("ended", [0]), ("train", 1), ("ended", [1])]


@pytest.mark.parametrize("override, message", [
    ("+optimizer.lrr=1,2", "hpjax: error: optimizer.lrr=1: unknown key (added with '+'?)"),
    ("optimizer.lr=choice(0.1, -1)",
     "hpjax: error: optimizer.lr=-1.0: must be a finite number > 0"),
    # an int32 in the program: hpjax's own check, whatever NumPy does with 2**40
    ("train.seed=choice(0, 1099511627776)", "hpjax: error: train.seed=1099511627776: must be an "
     "integer between -2147483648 and 2147483647 (an int32 in the compiled program)"),
    ("hydra.sweeper.storage=postgresql://hpjax:s3cr3t@localhost:1/hpjax",
     "hpjax: error: hydra.sweeper.storage=postgresql://hpjax:***@localhost:1/hpjax: cannot "
     "connect"),
    ("hydra.sweeper.storage=mysql://hpjax:s3cr3t@localhost/hpjax",
     "hpjax: error: hydra.sweeper.storage=mysql://hpjax:***@localhost/hpjax: the database "
     "driver 'MySQLdb' is not installed"),
])
def test_a_sweep_that_cannot_run_says_why_in_one_line_and_writes_nothing(tmp_path, capsys,
                                                                          override, message):
    with pytest.raises(SystemExit) as e:
        sweep([*HPJAX, "optimizer.lr=choice(0.1, 0.01)", override], tmp_path / "s")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "s3cr3t" not in err
    assert not (tmp_path / "s").exists()


def test_int_cast_of_an_interval_searches_integers():
    [p] = parse(["model.width=int(interval(8, 32))"]).params
    assert type(p.distribution).__name__ == "IntDistribution"
    assert (p.distribution.low, p.distribution.high) == (8, 32)
    assert p.override(17) == "model.width=17"


def test_the_default_grid_joins_only_a_bare_multirun(tmp_path, caplog):
    caplog.set_level("INFO")
    [jobs] = sweep([*TINY, "activation=relu", "model.dropout=0,0.1"], tmp_path / "s")
    assert len(jobs) == 2  # not 2 x the default grid's 9
    assert "search space: 1 axes, 2 trials (grid)\n  model.dropout  0,0.1  [command line]" \
        in caplog.text
    bare = sweep_argv(["-m"])
    assert bare == ["-m"]
    assert sweep_argv(["-m", "search=tpe", "optimizer.lr=0.1,0.2"])[-1] != \
        "hydra.sweeper.params=null"
    # a bare `hpjax -m` (fixed overrides allowed) gets the default grid, from the search group
    cfg = compose_config(["train.epochs=5"], validate=False, return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"optimizer.lr": "1e-3,3e-3,1e-2",
                                              "activation": "relu,tanh,gelu"}
    from hpjax.report.summary import grid_space

    assert "activation    relu,tanh,gelu  [default grid (conf/search/default.yaml)]" in \
        grid_space(cfg)
    # a preset replaces it whole: its space is its own keys (PBT's has no activation)
    for preset in sorted(p.stem for p in (CONF_DIR / "search").glob("*.yaml")):
        cfg = compose_config([f"search={preset}"], validate=False, return_hydra_config=True)
        own = OmegaConf.load(CONF_DIR / "search" / f"{preset}.yaml").hydra.sweeper.params
        assert list(cfg.hydra.sweeper.params) == list(own), preset
        if preset == "pbt":
            assert "activation" not in cfg.hydra.sweeper.params


def test_a_sweep_directory_has_one_owner(tmp_path, capsys):
    occupied = tmp_path / "s"
    (occupied / "0").mkdir(parents=True)  # a deleted study.db, or another sweeper's trials
    with pytest.raises(SystemExit):
        sweep([*HPJAX, "optimizer.lr=choice(0.1, 0.01)"], occupied)
    assert "holds job directories of another sweep, but study 'hpjax' is not in study.db" \
        in capsys.readouterr().err
    _storage.claim_owner(occupied, _storage.owner_of(None, "first"))
    with pytest.raises(SystemExit):
        sweep([*HPJAX, "optimizer.lr=choice(0.1, 0.01)", "hydra.sweeper.study_name=second"],
              occupied)
    assert "holds the trials of study 'first' in study.db: resume that study" in \
        capsys.readouterr().err
    assert sorted(p.name for p in occupied.iterdir()) == [".hpjax-study", "0"]


def test_broken_result_files_are_their_trials_problem_and_files_are_written_whole(tmp_path):
    for job, text in enumerate(['{"status": "ok", "objective": 0.9', '{"status": "ok"}']):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "result.json").write_text(text)
    (tmp_path / "2").mkdir()
    results.Result("ok", 0.5, "val/accuracy", "max", best={"val/accuracy": 0.5}).write(
        tmp_path / "2")
    (tmp_path / "2" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert report(tmp_path) is not None  # the readable trial is best; the others incomplete
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["0", ""], ["1", ""], ["2", "1"]]
    assert "incomplete" in rows[1] and "incomplete" in rows[2]
    assert results.read_metrics(tmp_path / "2") == [{"epoch": 1}, {"epoch": 2}]
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert not leftovers


@pytest.mark.parametrize("url, secret", [
    ("postgresql://u:p@ss@db.example/hpjax", "p@ss"),  # '@' in the password
    ("postgresql://u:p%40ss@db.example/hpjax", "p%40ss"),  # percent-encoded
    ("postgresql://db.example/hpjax?user=u&password=pw123", "pw123"),  # the query string
    ("postgresql://u@db.example/hpjax?sslmode=require&sslpassword=pw123", "pw123"),
])
def test_every_form_of_a_storage_password_is_masked_and_kept_out_of_saved_config(
        url, secret, monkeypatch):
    monkeypatch.setenv(_storage.PASSWORD_ENV, "")  # restored after the test
    masked = _storage.safe_url(url)
    assert secret not in masked and "ss@" not in masked and "***" in masked
    config = OmegaConf.create({"hydra": {"sweeper": {"storage": url},
                                         "overrides": {"hydra": [f"hydra.sweeper.storage={url}"]}}})
    _storage.hide_password(config, url)
    saved = OmegaConf.to_yaml(config)
    assert secret not in saved and "${oc.env:HPJAX_STORAGE_PASSWORD}" in saved
    assert os.environ[_storage.PASSWORD_ENV] == unquote(secret)  # what the jobs read


def test_installs_declare_what_they_use_and_start_off_linux(monkeypatch):
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.11"
    deps = {d.split(">")[0].split("[")[0].strip(): d for d in meta["dependencies"]}
    assert deps["optuna"].startswith("optuna>=4.9")  # heartbeat_stale_trial_callback
    assert {"sqlalchemy", "filelock"} <= set(deps)
    # CI installs these floors in a fresh virtualenv and runs a smoke test, before the suite
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text().strip().splitlines()
    assert "scripts/check_floors.sh" in ci[:-1]
    assert all(">=" in d for d in meta["dependencies"])  # each has a floor to install
    plugins = Path(__file__).parents[1] / "hydra_plugins"
    assert not [p for p in plugins.rglob("*.py") if "import fcntl" in p.read_text()]
    from hpjax.engine import compile as compile_lib

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # as on macOS
    assert compile_lib.usable_cores() == os.cpu_count()


def sigterm_once_saved(args, tmp_path, checkpoints, sig=signal.SIGTERM) -> str:
    """Runs `hpjax -m <args> hydra.sweep.dir=s` in a process, sends it SIGTERM (or `sig`) once a
    checkpoint is in `checkpoints`, checks it exits 128 + the signal (143, SIGINT's 130) and
    returns its output."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "hpjax"), "-m", *args,
                             "hydra.sweep.dir=s"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=child_env())
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (
            checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        time.sleep(0.02)
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + sig, out
    return out


# The signal tests' runs: one signature (the child processes load each other's programs from
# the run's cache; the reruns in this process share theirs), 15 epochs for a signal to stop.
SIGNALLED = ["data=iris", "model.width=8", "train.early_stopping.patience=null",
             "train.epochs=15", "train.checkpoint_every=1"]


def test_sigterm_stops_at_an_epoch_boundary_and_a_rerun_resumes(tmp_path):
    args = ["hydra/sweeper=hpjax", *SIGNALLED, "hydra.sweeper.n_trials=1",
            "optimizer.lr=tag(log, interval(1e-3, 1e-2))"]
    checkpoints = tmp_path / "s" / "0" / "checkpoints"
    out = sigterm_once_saved(args, tmp_path, checkpoints)
    assert "sweep stopped by SIGTERM" in out
    assert (tmp_path / "s" / "summary.csv").exists()  # Hydra's end-of-sweep callback ran
    [first, *rest] = study_trials(tmp_path / "s")
    assert (first.state.name, first.user_attrs["status"]) == ("FAIL", "interrupted")
    assert [t.state.name for t in rest] == ["WAITING"]  # its parameters, to run again
    saved = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert 1 <= saved < 15

    sweep(args, tmp_path / "s")  # the same command again
    trials = study_trials(tmp_path / "s")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == first.params
    result = json.loads((tmp_path / "s" / "1" / "result.json").read_text())
    assert result["resumed_from_epoch"] >= saved and result["epochs_run"] == 15


def test_sigint_under_hydras_basic_sweeper_stops_at_an_epoch_boundary_and_a_rerun_resumes(
        tmp_path):
    """Ctrl-C (SIGINT, exit 130) here; the test above sends SIGTERM (143) to hpjax's sweeper."""
    # populations of one: two, one after the other; the signal comes during the second
    args = [*SIGNALLED, "optimizer.lr=0.01,0.02", "hydra.launcher.max_population=1"]
    sweep_dir, checkpoints = tmp_path / "s", tmp_path / "s" / "1" / "checkpoints"
    out = sigterm_once_saved(args, tmp_path, checkpoints, signal.SIGINT)
    assert "sweep stopped by SIGINT: 1 unfinished jobs written as interrupted" in out
    first = (sweep_dir / "0" / "result.json").read_text()
    assert json.loads(first)["status"] == "ok"
    second = json.loads((sweep_dir / "1" / "result.json").read_text())
    saved = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert 1 <= saved < 15
    assert (second["status"], second["error"]) == (
        "interrupted", f"stopped by SIGINT (checkpoint at epoch {saved})")
    with (sweep_dir / "summary.csv").open() as f:  # Hydra's end-of-sweep callback ran
        assert [(r["trial"], r["status"]) for r in csv.DictReader(f)] == [
            ("0", "ok"), ("1", "interrupted")]

    sweep(args, sweep_dir)  # the same command again: only the interrupted job trains
    assert (sweep_dir / "0" / "result.json").read_text() == first
    second = json.loads((sweep_dir / "1" / "result.json").read_text())
    assert second["status"] == "ok" and second["epochs_run"] == 15
    assert second["resumed_from_epoch"] >= saved
    with (sweep_dir / "summary.csv").open() as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "ok"]


@pytest.mark.xdist_group("slurm")  # the one-node cluster's tests run one after another
def test_slurms_pre_timeout_signal_checkpoints_and_resubmits_the_job(slurm, tmp_path,
                                                                   jobs_share_the_cache):
    sweep_dir = tmp_path / "sweep"
    checkpoints = sweep_dir / "0" / "checkpoints"

    def signal_the_job():  # as SLURM does signal_delay_s before the time limit
        deadline = time.time() + 120
        while time.time() < deadline and not (checkpoints.is_dir() and any(
                p.name.isdigit() for p in checkpoints.iterdir())):
            time.sleep(0.05)
        job_id = next((sweep_dir / ".submitit").rglob("*_submitted.pkl")).parent.name
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # submitit's way

    thread = threading.Thread(target=signal_the_job)
    thread.start()
    sweep(["hydra/launcher=hpjax_slurm", *TINY, "optimizer.lr=0.01", "activation=relu",
           "train.epochs=16", "train.checkpoint_every=1", "hydra.launcher.signal_delay_s=60"],
          sweep_dir)  # the driver, in this process
    thread.join()
    scripts = list((sweep_dir / ".submitit").rglob("*_submission.sh"))
    assert len(scripts) == 2  # the job, and the same job submitted again
    assert all("#SBATCH --signal=USR2@60" in s.read_text() for s in scripts)  # asked of SLURM
    first = min(scripts, key=lambda s: int(s.parent.name)).parent
    assert "SIGUSR2 before the time limit: stopped at an epoch boundary, checkpoints saved" in \
        (first / f"{first.name}_0_log.out").read_text()
    result = json.loads((sweep_dir / "0" / "result.json").read_text())
    assert (result["status"], result["epochs_run"]) == ("ok", 16)
    assert 1 <= result["resumed_from_epoch"] < 16  # the epochs before: not trained again
    rows = [json.loads(r) for r in (sweep_dir / "0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 17))  # continuous across the restart


def test_heartbeats_survive_a_database_outage_and_say_so(tmp_path, caplog):
    caplog.set_level("INFO")
    db = tmp_path / "study.db"
    storage = optuna.storages.RDBStorage(  # a short busy timeout: a locked database fails fast
        f"sqlite:///{db}", heartbeat_interval=1, grace_period=3,
        engine_kwargs={"connect_args": {"timeout": 0.05}})
    study = _storage.create_study(storage)
    trial = study.ask()
    with _faults.heartbeats(study, [trial]):
        time.sleep(0.3)
        lock = sqlite3.connect(db)  # the database unavailable to the worker for 4.5 s
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(4.5)
        lock.rollback()
        lock.close()
        time.sleep(1.5)
        # beating again: no worker would fail the trial as stale now
        assert storage._get_stale_trial_ids(study._study_id) == []
    # hpjax's own lines: after a test whose Hydra job set up logging, SQLAlchemy's engine logs
    # its SQL (table trial_heartbeats) at INFO too
    logged = [(r.levelname, r.getMessage()) for r in caplog.records
              if "heartbeat" in r.getMessage() and r.name.startswith("hydra_plugins.")]
    assert [level for level, _ in logged] == ["WARNING", "ERROR", "WARNING"], logged
    assert logged[0][1].startswith("heartbeat of 1 running trials failed (OperationalError: ")
    assert "database is locked" in logged[0][1]
    assert logged[1][1].startswith("no heartbeat for ") and "beyond the grace period" in \
        logged[1][1]
    assert logged[2][1].startswith("heartbeats recorded again after ")


def _tiny(cfg):  # a task of the user's own: the workers import no JAX
    time.sleep(0.02)
    return (cfg.x - 0.3) ** 2


def _worker(storage, study_name, sweep_dir, n_trials):
    """One sweep process of a shared study, forked from the test (so it imports nothing):
    Hydra's multirun with hpjax's sweeper, Hydra's basic launcher and `_tiny`."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    ConfigStore.instance().store(name="tiny", node={
        "defaults": ["_self_", {"override hydra/sweeper": "hpjax"},
                     {"override hydra/launcher": "basic"}],
        "x": 0.0, "objective": {"mode": "min"}})
    GlobalHydra.instance().clear()
    hydra_ = Hydra.create_main_hydra2(task_name="worker",
                                      config_search_path=create_config_search_path(None))
    hydra_.multirun(config_name="tiny", task_function=_tiny, with_log_configuration=False,
                    overrides=["hydra.sweeper.algorithm=random", "x=interval(0, 1)",
                               f"hydra.sweeper.n_trials={n_trials}",
                               f"hydra.sweeper.storage={storage}",
                               f"hydra.sweeper.study_name={study_name}",
                               # SQLite keeps whole seconds, and 8 processes share 2 cores:
                               # a live worker's heartbeats were seen to stall for 4 s there
                               # (its trial then failed as stale and ran again); the workers
                               # waiting out the grace period poll once a second (each poll
                               # opens a connection: at 4 a second they used most of the CPU)
                               "hydra.sweeper.heartbeat_interval=1",
                               "hydra.sweeper.grace_period=10", "hydra.sweeper.poll_s=1",
                               f"hydra.sweep.dir={sweep_dir}",
                               # each job as light as Hydra runs it: no logging set up, no
                               # .hydra/ files (what is tested is the study's trials)
                               "hydra/job_logging=none", "hydra/hydra_logging=none",
                               "hydra.output_subdir=null"])


def _fork(target, *args, delay=0.0):
    import warnings

    with warnings.catch_warnings():  # JAX warns of fork; the child never uses JAX
        warnings.simplefilter("ignore", RuntimeWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            time.sleep(delay)
            target(*args)
            code = 0
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_workers_starting_and_dying_at_random_run_exactly_n_trials(backend, tmp_path):
    import sqlalchemy
    from hydra.core.plugins import Plugins

    if backend == "postgresql":
        from helpers import PG_URL, postgres_down, require

        require(postgres_down(), "PostgreSQL")
        storage = url = PG_URL
    else:
        storage, url = "null", f"sqlite:///{tmp_path / 's' / 'study.db'}"
    # what every worker needs, imported once here: the forked workers start in ~0.1 s of CPU
    optuna.storages.RDBStorage("sqlite:///:memory:")
    Plugins.instance()
    name, n_trials = f"many-{os.getpid()}-{time.time_ns()}", 16
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 1.5, size=8)  # each starts at its own time
    pids = [_fork(_worker, storage, name, tmp_path / "s", n_trials, delay=d) for d in delays]
    engine = sqlalchemy.create_engine(url)

    def asked() -> int:
        if backend == "sqlite" and not (tmp_path / "s" / "study.db").exists():
            return 0
        try:
            with engine.connect() as conn:
                return conn.execute(sqlalchemy.text(
                    "SELECT COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                    "WHERE s.study_name = :name"), {"name": name}).scalar()
        except sqlalchemy.exc.SQLAlchemyError:  # not created yet
            return 0

    # two workers killed with SIGKILL at random points: after 3 and after 8 asked trials
    killed = [pids[int(k)] for k in rng.choice(8, size=2, replace=False)]
    for pid, after in zip(killed, (3, 8), strict=True):
        deadline = time.time() + 60
        while asked() < after and time.time() < deadline:
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    codes, deadline = {}, time.time() + 120
    while len(codes) < len(pids) and time.time() < deadline:  # a trial left running: a hang
        for pid in set(pids) - set(codes):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    for pid in set(pids) - set(codes):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    engine.dispose()
    assert len(codes) == len(pids), "workers still waiting after 120 s"
    assert [codes[p] for p in pids if p not in killed] == [0] * 6  # no "database is locked"
    assert [codes[p] for p in killed] == [-signal.SIGKILL] * 2
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == n_trials and len({t.params["x"] for t in done}) == n_trials
    lost = [t for t in trials if t.state.name != "COMPLETE"]
    assert len(lost) <= 2  # at most the killed workers' running trials (batches of 1)
    # each failed as stale by a live worker and run again with its parameters; a retry can be
    # lost in turn (the other killed worker ran it), and its own retry then runs them
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    for t in lost:
        assert t.state.name == "FAIL"
        again = retries[t.number]
        while again.state.name != "COMPLETE":
            again = retries[again.number]
        assert again.params == t.params


@pytest.mark.parametrize("error", ["IntegrityError", "OperationalError"])
def test_a_sweep_whose_new_databases_schema_version_another_records_at_once_joins(
        error, tmp_path, monkeypatch):
    """Optuna records a new database's schema version wherever it finds none, a sweep checking
    the database for its study (outside the study lock) too: one recording it as another
    does failed with IntegrityError (UNIQUE constraint failed: alembic_version.version_num),
    or, the other's table made first, OperationalError (table alembic_version already exists),
    and that worker exited (test_eight_workers_...). The storage is then made again: it reads
    the version recorded."""
    import sqlalchemy.exc

    url, real, made = f"sqlite:///{tmp_path / 'study.db'}", optuna.storages.RDBStorage, []
    raised = {"IntegrityError": sqlalchemy.exc.IntegrityError(
                  "INSERT INTO alembic_version", {}, sqlite3.IntegrityError(
                      "UNIQUE constraint failed: alembic_version.version_num")),
              "OperationalError": sqlalchemy.exc.OperationalError(
                  "CREATE TABLE alembic_version", {}, sqlite3.OperationalError(
                      "table alembic_version already exists"))}[error]

    def racing(url, **kw):  # another sweep records the version just before this one
        made.append(url)
        if len(made) == 1:
            real(url)
            raise raised
        return real(url, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(optuna.storages, "RDBStorage", racing)
        storage = _storage.make_storage(url, None, None, None)
    assert len(made) == 2 and isinstance(storage, real)
    assert _storage.create_study(storage, study_name="hpjax").study_name == "hpjax"


def test_a_grid_of_a_million_points_is_enqueued_a_batch_at_a_time():
    from hydra_plugins.hpjax_sweeper._impl import HpjaxSweeperImpl

    sweeper = HpjaxSweeperImpl(algorithm="grid", n_trials=None, batch_size=4, seed=0,
                               params=None, storage=None, study_name="hpjax", objectives=None,
                               direction=None, fail_stale_trials=True)
    study = _storage.create_study(optuna.storages.InMemoryStorage())
    space = parse(["model.dropout=range(0,1000)", "train.seed=range(0,1000)"])
    start = time.perf_counter()
    assert sweeper._enqueue_grid(study, space) == 1_000_000 and not study.trials
    assert sweeper._enqueue_grid(study, space, room=4) == 1_000_000
    waiting = [t.system_attrs["fixed_params"] for t in study.trials]
    assert waiting == [{"model.dropout": "0", "train.seed": str(s)} for s in range(4)]
    study.ask(), study.ask()  # two of them start: two more points are enqueued
    sweeper._enqueue_grid(study, space, room=4)
    assert [t.system_attrs["fixed_params"]["train.seed"] for t in study.trials] == [
        str(s) for s in range(6)]
    assert time.perf_counter() - start < 10


def test_sqlite_workers_wait_for_a_busy_database_instead_of_failing(tmp_path):
    """SQLite's default busy timeout is 5 s: a worker whose write waited longer for another's
    lock failed with "database is locked"."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=_storage.make_storage(url, None, None, None),
                                study_name="hpjax")
    other = sqlite3.connect(tmp_path / "study.db", check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")  # another worker holds the database for 6 s
    release = threading.Timer(6, other.rollback)
    release.start()
    start = time.perf_counter()
    study.enqueue_trial({"x": 1})
    assert time.perf_counter() - start > 5 and len(study.trials) == 1
    release.join()
    other.close()


def test_non_finite_features_in_the_users_data_are_an_error_not_diverged_trials(tmp_path):
    from hpjax import data
    from hpjax.config import ConfigError

    x = np.random.default_rng(0).normal(size=(60, 3))
    x[5, 1] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3)
    cfg = compose_config(["data=npz", f"data.path={tmp_path / 'd.npz'}"])
    with pytest.raises(ConfigError, match="returned features with NaN or inf"):
        data.load(cfg.data)


def test_journal_workers_record_heartbeats_and_a_dead_workers_trial_runs_again(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    from hydra_plugins.hpjax_sweeper import _faults

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = _storage.create_study(storage, study_name="hpjax")
    dead, alive = study.ask({"x": FloatDistribution(0, 1)}), study.ask()
    with _faults.heartbeats(study, [alive], interval=1):
        time.sleep(1.5)  # two beats
    beat = storage.get_trial(_storage.trial_id(study, alive)).system_attrs[_faults.HEARTBEAT]
    assert time.time() - beat < 2
    storage.set_trial_system_attr(_storage.trial_id(study, dead), _faults.HEARTBEAT,
                                  time.time() - 60)
    _faults.fail_stale(study, heartbeats=True, tell=None, max_retries=2, grace_period=10)
    states = [(t.state.name, t.user_attrs.get("status")) for t in study.get_trials()]
    assert states == [("FAIL", "killed"), ("RUNNING", None), ("WAITING", None)]
    assert study.get_trials()[2].system_attrs["fixed_params"] == dead.params
