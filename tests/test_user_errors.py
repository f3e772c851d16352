"""User errors in one line and exit code 2, never a traceback, wherever they are found; and the
preflight of what would fail every trial, before the study or any directory exists (issue 26).

Each sweep runs in this process through Hydra's own `run_and_report`, as the `hpjax` command
does: an exception that is not a user error would print its traceback there and exit 1.
"""

import os
import sqlite3

import optuna
import pytest
from hydra._internal.utils import run_and_report

from helpers import multirun, need, small_fs
from hpjax.cli import sweep_argv

TINY = ["data=iris", "model.width=8", "train.epochs=2"]
HPJAX = ["hydra/sweeper=hpjax", *TINY, "hydra.sweeper.n_trials=2"]


def hpjax_m(overrides, sweep_dir, capsys):
    """`hpjax -m <overrides>` as the command runs it: (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as e:
        run_and_report(lambda: multirun(sweep_argv(["-m", *overrides])[1:], sweep_dir))
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def one_line(code, output, message):
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert (code, lines[-1:]) == (2, [f"hpjax: error: {message}"]), output
    assert not any(line.startswith("hpjax: error") for line in lines[:-1]), output


@pytest.mark.parametrize("overrides, message", [
    # the sweeper's setup
    (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0: must be >= 1 (or null for grid)"),
    (["hydra.sweeper.batch_size=0"], "hydra.sweeper.batch_size=0: must be >= 1"),
    (["hydra.sweeper.algorithm=bayes"], "hydra.sweeper.algorithm='bayes': must be one of grid, "
     "random, tpe, gp, cmaes, nsga2, qmc, sha, hyperband, pbt"),
    (["hydra.sweeper.direction=up"], "hydra.sweeper.direction='up': must be min or max (or "
     "null: the app's objective.mode)"),
    (["hydra.sweeper.heartbeat_interval=0"], "hydra.sweeper.heartbeat_interval=0: must be >= 1 "
     "second, or null (off)"),
    (["hydra.sweeper.keep_params=-1"], "hydra.sweeper.keep_params=-1: must be an integer >= 0, "
     "or null to keep every trial's parameters"),
    (["hydra.sweeper.eta=1", "hydra.sweeper.algorithm=sha"], "hydra.sweeper.eta=1: must be an "
     "integer >= 2 (the fraction 1/eta of a rung's trials go on to the next rung; 3 is usual)"),
    # found while the sweep starts
    (["hydra.sweeper.algorithm=sha", "hydra.sweeper.n_trials=null",
      "train.epochs=choice(2, 4)"], "train.epochs is the maximum resource R of multi-fidelity "
     "search and cannot be searched: give it one value (train.epochs=27)"),
    (["hydra.sweeper.algorithm=pbt", "activation=choice(relu, tanh)"], "algorithm=pbt: "
     "activation must be searched as an interval of floats (interval(...) or tag(log, "
     "interval(...))): PBT multiplies values by 0.8 or 1.2 and resamples them from their range"),
    (["hydra.sweeper.pruner=median", "hydra/launcher=basic", "optimizer.lr=interval(0.01, 0.1)"],
     "hydra.sweeper.pruner trains its trials inside populations and needs hydra/launcher=vmap "
     "(the default); got BasicLauncher"),
    # the launcher's setup
    (["hydra.launcher.max_population=0"], "hydra.launcher.max_population=0: must be >= 1"),
])
def test_the_sweepers_and_launchers_errors_are_one_line_and_exit_2(tmp_path, capsys, overrides,
                                                                   message):
    code, output = hpjax_m([*HPJAX, *overrides], tmp_path / "s", capsys)
    one_line(code, output, message)


def _study(sweep_dir, direction="maximize", attrs=None, trial=False, name="hpjax"):
    sweep_dir.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{sweep_dir / 'study.db'}",
                                study_name=name, direction=direction)
    for key, value in ({"hpjax:workers": 1} if attrs is None else attrs).items():
        study._storage.set_study_system_attr(study._study_id, key, value)
    if trial:
        study.add_trial(optuna.trial.create_trial(params={"x": 1.0}, distributions={
            "x": optuna.distributions.FloatDistribution(0, 2)}, value=0.5))
    return sweep_dir / "study.db"


def test_a_resumed_study_of_the_other_mode_is_one_line_not_a_traceback(tmp_path, capsys):
    db = _study(tmp_path / "s")
    code, output = hpjax_m([*HPJAX, "objective.metric=val/loss", "objective.mode=min"],
                           tmp_path / "s", capsys)
    one_line(code, output, f"study 'hpjax' in sqlite:///{db} optimises ['maximize'], this "
             "sweep ['minimize'] (objective.mode, hydra.sweeper.direction or objectives): resume "
             "it as it was, or use another hydra.sweeper.study_name (or hydra.sweep.dir)")


def test_a_resumed_study_of_another_space_or_algorithm_stops_before_mixing(tmp_path, capsys):
    space = {"optimizer.lr": "float log [0.001, 0.1]"}
    db = _study(tmp_path / "s", attrs={"hpjax:workers": 1, "hpjax:algorithm": "random",
                                       "hpjax:space": space})
    code, output = hpjax_m([*HPJAX, "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
                            "hydra.sweeper.algorithm=tpe"], tmp_path / "s", capsys)
    one_line(code, output, f"study 'hpjax' in sqlite:///{db} was searched with algorithm="
             "random, this sweep with algorithm=tpe: resume it with the same algorithm, or use "
             "another hydra.sweeper.study_name (or hydra.sweep.dir)")
    code, output = hpjax_m([*HPJAX, "optimizer.lr=interval(0.1, 0.2)", "activation=relu,tanh"],
                           tmp_path / "s", capsys)
    one_line(code, output, f"study 'hpjax' in sqlite:///{db} searched another space ("
             "optimizer.lr: float log [0.001, 0.1] there, float [0.1, 0.2] here; activation: not "
             "searched there, choice(relu, tanh) here): resume it with the same space, or use "
             "another hydra.sweeper.study_name (or hydra.sweep.dir)")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["study.db"]


def test_a_study_made_by_another_tool_is_not_joined(tmp_path, capsys):
    db = _study(tmp_path / "s", attrs={}, trial=True)
    code, output = hpjax_m(HPJAX, tmp_path / "s", capsys)
    one_line(code, output, f"study 'hpjax' in sqlite:///{db} was not made by hpjax (Optuna's "
             "own, or another tool's): its trials would mix with this sweep's; use another "
             "hydra.sweeper.study_name (or hydra.sweep.dir)")
    assert len(optuna.load_study(study_name="hpjax", storage=f"sqlite:///{db}").trials) == 1


def test_a_damaged_or_foreign_study_file_is_refused_and_left_as_it_is(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    db = tmp_path / "s" / "study.db"
    db.write_bytes(b"not a database, but a file of something else\n" * 50)
    before = db.read_bytes()
    code, output = hpjax_m(HPJAX, tmp_path / "s", capsys)
    one_line(code, output, f"hydra.sweeper.storage=sqlite:///{db}: {db} is not an SQLite "
             "database (file is not a database); the file is left as it is: move it away, or "
             "pick another storage or hydra.sweep.dir")
    assert db.read_bytes() == before
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    code, output = hpjax_m([*HPJAX, f"hydra.sweeper.storage=sqlite:///{other}"], tmp_path / "o",
                           capsys)
    one_line(code, output, f"hydra.sweeper.storage=sqlite:///{other}: {other} is a database of "
             "another tool (tables invoices) with no Optuna study; the file is left as it is: "
             "move it away, or pick another storage or hydra.sweep.dir")
    # A new file whose schema another worker is making, table by table (SQLite makes each on
    # its own; seen with eight workers starting at once): Optuna's, not another tool's
    from hydra_plugins.hpjax_sweeper import _storage

    making = tmp_path / "making.db"
    with sqlite3.connect(making) as conn:
        for table in ("studies", "study_directions", "study_user_attributes", "version_info"):
            conn.execute(f"CREATE TABLE {table} (id INTEGER)")
    assert _storage.check_study(f"sqlite:///{making}", "hpjax", None, "random", {}) is None
    with sqlite3.connect(making) as conn:  # and beside a table of another tool's, it is not
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    assert "is a database of another tool (tables invoices, studies, study_directions, " \
        "study_user_attributes, version_info)" in _storage.check_study(
            f"sqlite:///{making}", "hpjax", None, "random", {})
    journal = tmp_path / "journal.log"
    journal.write_text("some log of something else\n")
    code, output = hpjax_m([*HPJAX, f"hydra.sweeper.storage={journal}"], tmp_path / "j", capsys)
    one_line(code, output, f"hydra.sweeper.storage={journal}: {journal} is not an Optuna "
             "journal (its first line is not one of its records); the file is left as it is: "
             "move it away, or pick another storage or hydra.sweep.dir")
    assert journal.read_text() == "some log of something else\n"
    assert not any((tmp_path / d).exists() for d in ("o", "j"))


# -- preflight: what would fail every trial, found before anything is written ----------------
MISSING = {"mnist1d": ["data=mnist1d", "data.n_samples=200"], "wandb": ["logger=wandb"],
           "torch": ["hydra.sweeper.algorithm=gp"]}


@pytest.mark.parametrize("package, message", [
    ("mnist1d", "data='mnist1d': needs the mnist1d package: pip install 'hpjax[mnist1d]'"),
    ("wandb", "logger=wandb needs the wandb package, which is not installed (import of wandb "
     "halted; None in sys.modules): pip install 'hpjax[wandb]'"),
    ("torch", "algorithm=gp needs PyTorch (Optuna's GPSampler): pip install 'hpjax[gp]'"),
])
def test_a_chosen_option_whose_package_is_missing_stops_before_anything(
        tmp_path, capsys, monkeypatch, package, message):
    monkeypatch.setitem(__import__("sys").modules, package, None)  # its import fails
    code, output = hpjax_m([*HPJAX, *MISSING[package]], tmp_path / "s", capsys)
    one_line(code, output, message)
    assert not (tmp_path / "s").exists()


def test_a_data_path_or_target_that_would_fail_every_trial_stops_before_anything(tmp_path,
                                                                                  capsys):
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("_target_: nosuchpkg.Model\nfeatures: 8\n")
    (tmp_path / "a_dir.npz").mkdir()
    for overrides, message in [
            (["data=npz", f"data.path={tmp_path}/none.npz"],
             f"data.path='{tmp_path}/none.npz': file not found"),
            (["data=npz", f"data.path={tmp_path}/a_dir.npz"],
             f"data.path='{tmp_path}/a_dir.npz': is a directory, not a file"),
            (["data=csv", "data.path=/proc/self/mem"],  # it opens, but cannot be read
             "data.path='/proc/self/mem': cannot be read (OSError: Input/output error)"),
            (["model=mine", f"hydra.searchpath=[file://{tmp_path}/conf]"],
             "model._target_='nosuchpkg.Model': does not import (ModuleNotFoundError: No module "
             "named 'nosuchpkg'); is its package installed or in the working directory?")]:
        code, output = hpjax_m(["hydra/sweeper=hpjax", "train.epochs=2",
                                "hydra.sweeper.n_trials=2", *overrides], tmp_path / "s", capsys)
        one_line(code, output, message)
        assert not (tmp_path / "s").exists()


def test_a_storage_or_sweep_directory_that_cannot_be_written_stops_before_anything(
        tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    with small_fs(ro, size_kb=64, read_only=True) as mounted:
        if not mounted:  # inject what a read-only file system answers
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(
                str(ro)) and mode & os.W_OK else real(p, mode, **kw))
        code, output = hpjax_m([*HPJAX, f"hydra.sweeper.storage=sqlite:///{ro}/study.db"],
                               tmp_path / "s", capsys)
        one_line(code, output, f"hydra.sweeper.storage=sqlite:///{ro}/study.db: cannot write "
                 f"in {ro} (read-only file system, or not yours)")
        code, output = hpjax_m(HPJAX, ro / "s", capsys)
        one_line(code, output, f"hydra.sweep.dir={ro}/s: cannot write in {ro} (read-only file "
                 "system, or not yours)")
    assert not (tmp_path / "s").exists()



def _missing_target(tmp_path):
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "mine.yaml").write_text("_target_: nosuchpkg.Model\nfeatures: 8\n")
    return ["model=mine", f"hydra.searchpath=[file://{tmp_path}/conf]"]


def test_under_hydras_basic_sweeper_the_preflight_stops_before_any_job(tmp_path, capsys,
                                                                      monkeypatch):
    """Hydra's own sweeper with hpjax's launcher: what would fail every trial stops the sweep
    before its first job, as under hpjax's sweeper (it was each trial failing: exit 4). Hydra's
    sweeper writes multirun.yaml first; no job directory exists."""
    monkeypatch.setitem(__import__("sys").modules, "mnist1d", None)
    for overrides, message in [
            (["data=mnist1d", "data.n_samples=200"],
             "data='mnist1d': needs the mnist1d package: pip install 'hpjax[mnist1d]'"),
            # the first job of each set of group choices is checked
            (["data=iris,mnist1d"],
             "data='mnist1d': needs the mnist1d package: pip install 'hpjax[mnist1d]'"),
            (["data=npz", f"data.path={tmp_path}/none.npz"],
             f"data.path='{tmp_path}/none.npz': file not found"),
            (_missing_target(tmp_path),
             "model._target_='nosuchpkg.Model': does not import (ModuleNotFoundError: No module "
             "named 'nosuchpkg'); is its package installed or in the working directory?")]:
        sweep_dir = tmp_path / "s"
        code, output = hpjax_m(["hydra/sweeper=basic", "train.epochs=2",
                                "optimizer.lr=0.01,0.02", *overrides], sweep_dir, capsys)
        one_line(code, output, message)
        assert sorted(p.name for p in sweep_dir.iterdir()) == ["multirun.yaml"]
        (sweep_dir / "multirun.yaml").unlink()


def test_the_python_api_raises_a_config_error_for_a_trackers_missing_package(tmp_path,
                                                                            monkeypatch):
    """`hpjax.train` with a logger whose package is missing: the command's one line as a
    ConfigError, not the command's SystemExit; nothing trains."""
    import hpjax

    monkeypatch.setitem(__import__("sys").modules, "wandb", None)
    with pytest.raises(hpjax.ConfigError) as e:
        hpjax.train([*TINY, "logger=wandb"], str(tmp_path / "run"))
    assert str(e.value) == ("logger=wandb needs the wandb package, which is not installed "
                            "(import of wandb halted; None in sys.modules): pip install "
                            "'hpjax[wandb]'")
    assert e.value.key == "logger"
    assert not (tmp_path / "run" / "result.json").exists()


def test_under_hydras_basic_sweeper_a_sweep_directory_of_another_grid_is_not_mixed(tmp_path,
                                                                                   capsys):
    """The same hydra.sweep.dir given to another grid: Hydra's sweeper would overwrite its
    jobs 0 and 1 and leave job 2, which the report would rank with this sweep's. One line and
    exit 2, the other sweep's files as they were."""
    sweep_dir = tmp_path / "s"
    for n, lr in enumerate(("0.1", "0.2", "0.3")):
        (sweep_dir / str(n) / ".hydra").mkdir(parents=True)
        (sweep_dir / str(n) / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n")
    before = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
    code, output = hpjax_m(["hydra/sweeper=basic", *TINY, "optimizer.lr=0.01,0.02"], sweep_dir,
                           capsys)
    one_line(code, output, f"hydra.sweep.dir={sweep_dir} holds the jobs of another sweep (job 0 "
             "ran optimizer.lr=0.1; this sweep's job 0 is data=iris model.width=8 train.epochs=2 "
             "optimizer.lr=0.01): its trials would mix with this sweep's; pick another "
             "hydra.sweep.dir, or move that one away")
    assert {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file() and
            p.name != "multirun.yaml"} == before


def test_the_submitit_launcher_checks_the_first_batch_before_submitting(tmp_path, capsys,
                                                                       monkeypatch):
    """hydra/launcher=hpjax_submitit_local (submitit's local executor, as SLURM's) under
    Hydra's basic sweeper: the same preflight, before any job is submitted."""
    need("submitit", "slurm")
    monkeypatch.setitem(__import__("sys").modules, "mnist1d", None)
    sweep_dir = tmp_path / "s"
    code, output = hpjax_m(["hydra/sweeper=basic", "hydra/launcher=hpjax_submitit_local",
                            "data=mnist1d", "train.epochs=2", "optimizer.lr=0.01,0.02"],
                           sweep_dir, capsys)
    one_line(code, output, "data='mnist1d': needs the mnist1d package: pip install "
             "'hpjax[mnist1d]'")
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["multirun.yaml"]
