"""The speedups (`hydra_plugins/*/_speedups`: Optuna's and Hydra's internals) and the public path
they stand in for (`study.ask`/`tell`, Hydra's `run_job`, `HPJAX_SPEEDUPS=off`) leave the same
sweep: the same study rows and the same job files, byte for byte. scripts/check_floors.sh runs
this file at the lowest supported Optuna and Hydra, CI at the newest."""

import json
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import multirun
from hydra_plugins.hpjax_launcher import _fast
from hydra_plugins.hpjax_launcher import _impl as launcher_impl
from hydra_plugins.hpjax_launcher import _speedups as launcher_speedups
from hydra_plugins.hpjax_sweeper import _speedups as sweeper_speedups

pytestmark = pytest.mark.xdist_group("algorithms")  # one worker: the iris programs compile once
ROOT = Path(__file__).resolve().parents[2]
# TPE in two batches: 10 at random, then 2 modelled with the constant liar (TPE starts once 10
# trials, or a batch, have finished); both more than PER_TRIAL_LINES, set to 1 here: the quiet
# jobs of a large batch; the first batch in populations of 8 and 2; floats, a string with '/', a
# group choice, ints; job numbers of one and two digits. Iris with a hidden layer of 8 for 2
# epochs: test_algorithms' program (their xdist_group)
SWEEP = ["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=tpe", "hydra.sweeper.n_trials=12",
         "hydra.sweeper.batch_size=10", "hydra.launcher.max_population=8",
         "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
         "model.dropout=choice(0, 0.25)", "activation=choice(relu, tanh)",
         "train.early_stopping.monitor=choice(val/loss, val/accuracy)",
         "train.early_stopping.patience=choice(1, 5)", "data=iris", "model.width=8",
         "train.epochs=2", "train.save_params=none"]
N = 12
TIMING = ("compile_time_s", "train_time_s", "samples_per_s", "population", "epoch_time_s")
UNTIMED_COLUMNS = re.compile(r"datetime_\w*|heartbeat")


def _rows(db: Path, sweep_dir: Path) -> dict:
    """Every table of the study, rows sorted, without times, the sweep's directory a name."""
    conn = sqlite3.connect(db)
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
              if t != "trial_heartbeats"]
    rows = {}
    for table in tables:
        cursor = conn.execute(f"SELECT * FROM {table}")  # noqa: S608  (names from the schema)
        keep = [i for i, d in enumerate(cursor.description)
                if not UNTIMED_COLUMNS.fullmatch(d[0])]
        rows[table] = sorted(
            tuple(str(r[i]).replace(str(sweep_dir), "<sweep>") for i in keep)
            for r in cursor.fetchall())
    conn.close()
    return rows


def _untimed(path: Path) -> dict:
    data = json.loads(path.read_text())
    for key in TIMING:
        data.pop(key, None)
        data.get("best", {}).pop(key, None)
    return data


def test_the_speedups_and_the_public_path_leave_the_same_study_and_job_files(
        tmp_path, monkeypatch):
    from hydra_plugins.hpjax_sweeper._speedups import _bulk

    used = {"bulk": 0, "templated": 0}
    ask, job = _bulk.ask, _fast.Templates.job

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            used[name] += 1
            return out
        return wrapper

    monkeypatch.setattr(_bulk, "ask", counted("bulk", ask))
    monkeypatch.setattr(_fast.Templates, "job", counted("templated", job))
    monkeypatch.setattr(launcher_impl, "PER_TRIAL_LINES", 1)  # both batches large
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    monkeypatch.setenv("HPJAX_SPEEDUPS", "on")
    assert sweeper_speedups.enabled() and launcher_speedups.enabled()
    multirun(SWEEP, fast)
    assert used == {"bulk": 2, "templated": N}  # every batch took the speedups
    monkeypatch.setenv("HPJAX_SPEEDUPS", "off")
    assert not sweeper_speedups.enabled() and not launcher_speedups.enabled()
    multirun(SWEEP, slow)
    assert used == {"bulk": 2, "templated": N}  # none did

    ours, theirs = _rows(fast / "study.db", fast), _rows(slow / "study.db", slow)
    assert ours.keys() == theirs.keys() and "trial_params" in ours
    assert len(ours["trials"]) == N and len(ours["trial_values"]) == N
    assert len(ours["trial_intermediate_values"]) == 2 * N  # the learning curves
    for table in ours:
        assert ours[table] == theirs[table], table
    stamp = re.compile(r"^\[[^]]*\]", re.M)
    for i in range(N):
        a, b = fast / str(i), slow / str(i)
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir()) == [
            ".hydra", "hpjax.log", "metrics.jsonl", "result.json"]  # (the task's name here)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            assert (a / ".hydra" / name).read_text().replace(str(fast), str(slow)) == (
                b / ".hydra" / name).read_text(), (i, name)
        assert stamp.sub("", (a / "hpjax.log").read_text()) == stamp.sub(
            "", (b / "hpjax.log").read_text())
        assert "ok: val/" in (a / "hpjax.log").read_text()
        assert _untimed(a / "result.json") == _untimed(b / "result.json")


# Hydra's basic sweeper (a grid of 4, one batch: fewer than PER_TRIAL_LINES, so the jobs are
# named on the terminal) with hpjax's end-of-sweep report among the callbacks, as the app runs it
GRID = ["optimizer.lr=0.01,0.1", "model.dropout=0.25", "activation=relu,tanh",
        "hydra.sweeper.params=null", "data=iris", "model.width=8", "train.epochs=2",
        "train.save_params=none"]


def test_hydras_basic_sweeper_takes_the_templated_jobs_and_leaves_hydras_job_files(
        tmp_path, monkeypatch):
    used = []
    job = _fast.Templates.job
    monkeypatch.setattr(_fast.Templates, "job", lambda *a: (job(*a), used.append(1))[0])
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    monkeypatch.setenv("HPJAX_SPEEDUPS", "on")
    [ours] = multirun(GRID, fast)
    assert len(used) == 4  # every job templated: the report asks for no job's config
    monkeypatch.setenv("HPJAX_SPEEDUPS", "off")
    [theirs] = multirun(GRID, slow)
    assert len(used) == 4
    # Hydra's run_job also runs the report's per-job progress line, into each job's log
    stamp = re.compile(r"^.*\] - \[sweep\] .*\n|^\[[^]]*\]", re.M)
    for i, (f, s) in enumerate(zip(ours, theirs, strict=True)):
        a, b = fast / str(i), slow / str(i)
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            assert (a / ".hydra" / name).read_text().replace(str(fast), str(slow)) == (
                b / ".hydra" / name).read_text(), (i, name)
        assert stamp.sub("", (a / "hpjax.log").read_text()) == stamp.sub(
            "", (b / "hpjax.log").read_text())
        assert _untimed(a / "result.json") == _untimed(b / "result.json")
        assert f.overrides == s.overrides and f.return_value == s.return_value
        assert f.cfg == s.cfg and f.hydra_cfg.hydra.job.num == s.hydra_cfg.hydra.job.num == i
    assert len({(r.cfg.optimizer.lr, r.cfg.model.dropout, r.cfg.activation.name)
                for r in ours}) == 4
    assert (fast / "summary.csv").read_text().count("\n") == 5  # the report, from the files


def test_the_known_good_versions_are_the_ones_pyproject_supports():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]

    def declared(name):
        spec = next(d for d in deps if re.match(rf"{name}\s*[><=]", d))
        return (re.search(r">=\s*([\d.]+)", spec).group(1),
                re.search(r"<\s*([\d.]+)", spec).group(1))

    assert sweeper_speedups.OPTUNA == declared("optuna")
    assert launcher_speedups.HYDRA == declared("hydra-core")
    assert launcher_speedups.OMEGACONF == declared("omegaconf")
    in_range = sweeper_speedups.in_range
    assert in_range("4.9.0", ("4.9", "6")) and in_range("5.1.0", ("4.9", "6"))
    assert not in_range("4.8.1", ("4.9", "6")) and not in_range("6.0.0rc1", ("4.9", "6"))
    assert launcher_speedups.in_range("1.3.2", ("1.3.2", "1.4"))
    assert not launcher_speedups.in_range("1.4.0.dev1", ("1.3.2", "1.4"))


def test_importing_the_plugins_patches_no_module_of_optunas_or_hydras():
    probe = """
import sys, types
import optuna, optuna.samplers._tpe.sampler, optuna.study.study, optuna.storages
import hydra._internal.config_loader_impl, hydra.core.utils, omegaconf._utils
def snapshot():
    return {(m, k): id(v) for m, mod in list(sys.modules.items())
            if m.startswith(("optuna", "hydra.", "omegaconf")) and not m.startswith("hydra_plugins")
            for k, v in list(vars(mod).items())
            if isinstance(v, (types.FunctionType, type))}
before = snapshot()
import hydra_plugins.hpjax_sweeper._impl, hydra_plugins.hpjax_launcher._impl
from hydra_plugins.hpjax_sweeper._speedups import _bulk, _session, _tpe, _attrs
from hydra_plugins.hpjax_launcher import _compose, _fast
after = snapshot()
print(sorted(k for k in before if after.get(k) != before[k]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
