"""The hpjax sweeper plugin: Hydra's contract, real sweeps on digits, failures, resume, presets."""

import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite
from omegaconf import OmegaConf

import helpers
import hpjax
from helpers import child_env, compose_config, read_summary, run_main, trials_in
from hpjax.cli import CONF_DIR
from hpjax.report import SweepReport
from hydra_plugins.hpjax_sweeper._search import make_sampler, parse

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The sweeps train iris with a hidden layer of 8 for 2 epochs, as test_algorithms' do: in one
# process (their xdist_group) every population of that static config reuses its programs
TINY = ["data=iris", "model.width=8", "train.epochs=2"]
pytestmark = pytest.mark.xdist_group("algorithms")


def test_discovery():
    names = [cls.__name__ for cls in Plugins.instance().discover(Sweeper)]
    assert "HpjaxSweeper" in names


@pytest.mark.usefixtures("unset_version_base")
@pytest.mark.parametrize("launcher_name, overrides", [(
    "basic", ["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=grid", "hydra.sweeper.n_trials=null",
              "hydra.sweeper.batch_size=2"])])
class TestHpjaxSweeperBatches(BatchedSweeperTestSuite):
    """Hydra's own suite: a 6-point grid in 3 batches of 2, in the basic sweeper's order."""


@pytest.mark.usefixtures("hydra_restore_singletons", "unset_version_base")
@pytest.mark.parametrize("direction, best", [("max", 300), ("min", 100)])
def test_direction_min_or_max_sets_the_study_direction(hydra_sweep_runner, tmp_path, direction,
                                                       best):
    sweep = hydra_sweep_runner(
        calling_file=None, calling_module="hydra.test_utils.a_module",
        task_function=lambda cfg: cfg.bar, config_path="configs", config_name="compose.yaml",
        overrides=["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=grid",
                   "hydra.sweeper.n_trials=null", f"hydra.sweeper.direction={direction}",
                   "bar=100,200,300"], temp_dir=tmp_path)
    with sweep:
        study = optuna.load_study(study_name="hpjax", storage=f"sqlite:///{tmp_path}/study.db")
        assert [d.name for d in study.directions] == [f"{direction.upper()}IMIZE"]
        assert study.best_value == best


@pytest.mark.usefixtures("hydra_restore_singletons", "unset_version_base")
def test_a_bad_direction_names_the_key_and_the_values(hydra_sweep_runner, tmp_path):
    sweep = hydra_sweep_runner(
        calling_file=None, calling_module="hydra.test_utils.a_module",
        task_function=lambda cfg: cfg.bar, config_path="configs", config_name="compose.yaml",
        overrides=["hydra/sweeper=hpjax", "hydra.sweeper.direction=maximize", "bar=1,2"],
        temp_dir=tmp_path)
    with pytest.raises(SystemExit, match=re.escape(  # one line, exit 2 (hpjax.errors)
            "hydra.sweeper.direction='maximize': must be min or max")):
        with sweep:
            pass


@pytest.mark.parametrize("sweeper, lines", [
    ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper", 3),
    ("hydra_plugins.hpjax_sweeper.sweeper.HpjaxSweeper", 0)])
def test_sweep_report_logs_per_job_only_where_the_sweeper_does_not(tmp_path, caplog, sweeper,
                                                                     lines):
    """Under Hydra's basic sweeper each job logs the sweep's progress; hpjax's sweeper logs it
    once per batch itself."""
    report = SweepReport()
    report.on_multirun_start(OmegaConf.create({"hydra": {"sweeper": {"_target_": sweeper}}}))
    with caplog.at_level(logging.INFO, logger="hpjax"):
        for num, accuracy in enumerate([0.5, 0.9, None]):
            (tmp_path / str(num)).mkdir()
            if accuracy is not None:  # the last job left no result.json
                hpjax.Result(status="ok", objective=accuracy, objective_metric="val/accuracy",
                             objective_mode="max").write(tmp_path / str(num))
            report.on_job_end(OmegaConf.create({"hydra": {
                "runtime": {"output_dir": str(tmp_path / str(num))}, "job": {"num": num}}}),
                job_return=None)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[sweep]")]
    assert len(progress) == lines
    if lines:
        assert progress[-1].startswith("[sweep] 3 trials done, best val/accuracy 0.9000 (trial 1)")


def test_random_sweep_writes_jobs_summary_and_a_reproducible_best(hpjax_main, tmp_path):
    out = hpjax_main("-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
              "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=2",
              "optimizer.lr=tag(log, interval(1e-3, 3e-2))", "model.dropout=interval(0, 0.5)",
              "activation=choice(relu, tanh, gelu)", "train.batch_size=choice(32, 64)",
              *TINY, "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stderr
    sweep = tmp_path / "sweep"
    assert sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit()) == list(range(4))
    rows = read_summary(sweep)
    assert [int(r["trial"]) for r in rows] == list(range(4))
    assert {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert 1e-3 <= float(r["optimizer.lr"]) <= 3e-2
        saved = json.loads((sweep / r["trial"] / "result.json").read_text())
        assert float(r["objective"]) == saved["objective"]
    assert {r["train.batch_size"] for r in rows} == {"32", "64"}  # static: a program each
    assert len(trials_in(sweep, optuna.trial.TrialState.COMPLETE)) == 4
    best = min(rows, key=lambda r: int(r["rank"]))
    assert float(best["objective"]) == max(float(r["objective"]) for r in rows)
    log = out.stderr + out.stdout
    assert "[study] 4/4 trials finished, best val/accuracy" in log
    # one progress line per batch of 2, from the study; none per job
    assert log.count("[study] ") == 2 and "[sweep] " not in log
    assert out.stdout.count("4 trials, ranked by val/accuracy") == 1  # one table, at the end

    rerun = hpjax_main("--config-dir", str(sweep), "--config-name", "best", "hydra.run.dir=rerun")
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads((tmp_path / "rerun" / "result.json").read_text())
    # The sweep trained the best trial in a population (vmap), the rerun alone: batched and
    # single matrix products round differently (measured on digits: test/loss 2.7e-7 apart,
    # accuracies equal), so equal up to one validation or test sample (iris: 22 and 23).
    assert again["objective"] == pytest.approx(float(best["objective"]), abs=1 / 22 + 1e-7)
    saved = json.loads((sweep / best["trial"] / "result.json").read_text())["test"]
    assert again["test"]["test/loss"] == pytest.approx(saved["test/loss"], abs=1e-5)
    assert again["test"]["test/accuracy"] == pytest.approx(saved["test/accuracy"],
                                                           abs=1 / 23 + 1e-7)


def test_diverged_trial_is_listed_and_never_best(hpjax_main, tmp_path):
    out = hpjax_main("-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=grid",
              "hydra.sweeper.n_trials=null", "activation=relu",
              # Adam's first step moves every weight by about lr: 1e30 overflows float32
              "optimizer.lr=choice(1e30, 0.1)", "optimizer.weight_decay=0,1", *TINY,
              "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stderr
    sweep = tmp_path / "sweep"
    rows = read_summary(sweep)
    assert [r["status"] for r in rows] == ["diverged", "diverged", "ok", "ok"]
    assert [r["rank"] for r in rows[:2]] == ["", ""] and {r["rank"] for r in rows[2:]} == {"1", "2"}
    best = OmegaConf.load(sweep / "best.yaml")
    assert best.optimizer.lr == 0.1
    failed = trials_in(sweep, optuna.trial.TrialState.FAIL)
    assert [t.user_attrs["status"] for t in failed] == ["diverged", "diverged"]


def test_grid_with_an_interval_fails_with_a_clear_error(hpjax_main, tmp_path):
    out = hpjax_main("-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=grid",
              "optimizer.lr=interval(0.001, 0.1)", "hydra.sweep.dir=sweep")
    assert out.returncode == 2 and not (tmp_path / "sweep").exists()  # nothing written
    assert ("algorithm=grid needs discrete values, but optimizer.lr is continuous: use "
            "choice(...), a,b,c or range(...) instead of interval(...)") in out.stderr


def test_multi_objective_sweep_reports_the_pareto_front(hpjax_main, tmp_path):
    out = hpjax_main("-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=nsga2",
              "hydra.sweeper.n_trials=6", "hydra.sweeper.batch_size=3",
              "hydra.sweeper.objectives=[val/accuracy:max,num_params:min]",
              "model.width=choice(4, 8)", "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
              *TINY[:1], "train.epochs=2", "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stderr
    rows = read_summary(tmp_path / "sweep")
    front = [r for r in rows if r["pareto"] == "True"]
    # both widths sampled (seed 0); trials of one width have the same num_params, so the one
    # of lower accuracy is dominated: the front is some of the trials, never all
    assert {r["model.width"] for r in rows} == {"4", "8"}
    assert 0 < len(front) < len(rows)
    # on the front, nothing has both higher accuracy and fewer parameters
    for a in front:
        for b in rows:
            assert not (float(b["val/accuracy"]) > float(a["val/accuracy"])
                        and int(b["num_params"]) < int(a["num_params"]))
    assert "Pareto front of val/accuracy, num_params first" in out.stdout
    study = optuna.load_study(study_name="hpjax",
                              storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_killed_sweep_resumes_and_runs_only_the_missing_trials(tmp_path):
    args = ["-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
            "hydra.sweeper.n_trials=6", "hydra.sweeper.batch_size=2",
            "optimizer.lr=tag(log, interval(1e-3, 1e-2))", *TINY, "hydra.sweep.dir=sweep"]
    sweep = tmp_path / "sweep"
    # The driver, a process of its own, SIGKILLs itself as trial 2 starts (helpers.KillAtJob):
    # trials 0 and 1 told, 2 and 3 (the second batch) left running in the study, nothing
    # cleaned up
    out = subprocess.run(
        [str(Path(sys.executable).parent / "hpjax"), *args, *helpers.KillAtJob.overrides(2)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=helpers.KillAtJob.env())
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    complete = trials_in(sweep, optuna.trial.TrialState.COMPLETE)
    before = len(trials_in(sweep))
    assert len(complete) == 2 and before == 4
    kept = {t.number: (sweep / str(t.number) / "result.json").read_text() for t in complete}

    out = run_main(args, tmp_path)  # the same command again, in this process
    assert out.returncode == 0, out.stderr
    after = trials_in(sweep)
    assert len([t for t in after if t.state == optuna.trial.TrialState.COMPLETE]) == 6
    assert len(after) - before == 6 - len(complete)  # only the missing trials ran
    killed = [t for t in after if t.state == optuna.trial.TrialState.FAIL]
    assert [(t.number, t.user_attrs["status"]) for t in killed] == [(2, "killed"), (3, "killed")]
    for number, text in kept.items():  # finished trials' directories were not overwritten
        assert (sweep / str(number) / "result.json").read_text() == text
    assert f"resuming: {len(complete)} of 6 trials already finished" in out.stderr + out.stdout


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "search").glob("*.yaml")
                                            if p.stem != "default"))  # the bare grid
def test_every_preset_composes_and_its_space_parses(preset):
    cfg = compose_config([f"search={preset}"], validate=False, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hpjax_sweeper.sweeper.HpjaxSweeper"
    space = parse([f"{k}={v}" for k, v in sweeper.params.items()])
    # PBT changes traced numbers during training: an activation is not one
    needed = {"optimizer.lr"} if sweeper.algorithm == "pbt" else {"optimizer.lr", "activation"}
    assert needed <= {p.key for p in space.params}
    if sweeper.algorithm == "grid":
        assert len(space.grid()) == 24
    elif sweeper.algorithm in ("sha", "hyperband", "pbt"):
        make_sampler(sweeper.sampler, seed=0)
    elif sweeper.algorithm != "gp":
        make_sampler(sweeper.algorithm, seed=0, n_objectives=len(sweeper.objectives or [1]))
    first = (CONF_DIR / "search" / f"{preset}.yaml").read_text().splitlines()[1:3]
    assert first[1].strip() == f"#   hpjax -m search={preset}"


def test_two_workers_on_a_journal_file_run_exactly_n_trials(tmp_path):
    journal = tmp_path / "journal.log"
    args = ["-m", "hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
            "hydra.sweeper.n_trials=6", f"hydra.sweeper.storage={journal}",
            "hydra.sweeper.poll_s=0.2", "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
            # no heartbeats in a journal file: a worker must not fail the other's running trials
            "hydra.sweeper.fail_stale_trials=false", *TINY, "hydra.sweep.dir=sweep"]
    # one worker a process, the other this one (a process of its own would cost its imports and
    # compiles again)
    worker = subprocess.Popen([str(Path(sys.executable).parent / "hpjax"), *args], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env())
    here = run_main(args, tmp_path)
    outputs = [worker.communicate(timeout=300)[0], here.stdout + here.stderr]
    assert [worker.returncode, here.returncode] == [0, 0], outputs
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="hpjax", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(journal))))
    trials = study.get_trials()
    assert len(trials) == 6 and {t.state.name for t in trials} == {"COMPLETE"}
    assert sorted(int(p.name) for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == \
        list(range(6))
    # each worker ran some of them (job lines "#N :"), none ran one twice
    ran = [int(n) for out in outputs for n in re.findall(r"#(\d+) : ", out)]
    assert sorted(ran) == list(range(6))
    # the second worker to join samples from seed + 1: no point proposed twice
    assert len({t.params["optimizer.lr"] for t in trials}) == 6
    assert sum("worker 1 of study 'hpjax': sampler seed 1" in out for out in outputs) == 1
