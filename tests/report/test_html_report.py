"""report.html: built from the job directories of any sweep, checked in a real browser (Debian's
Chromium driven by Playwright); the study's attributes under hpjax's sweeper."""

import json
import shutil
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from helpers import REPORT_GRID, multirun, need, require
from hpjax.report import html as html_report
from hpjax.report import main as report_main
from hpjax.report.trials import read_trials
from hpjax.results import Result, write_metrics

pytestmark = pytest.mark.xdist_group("report")  # with test_loggers: one compile, one worker
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GRID = REPORT_GRID


def fake_sweep(sweep_dir: Path, outcomes: list[tuple], objectives=None,
               population=None) -> None:
    """Job directories as a sweep leaves them, without training: (overrides, status,
    val/accuracy per epoch, num_params) per trial, all in one `population` if given."""
    config = {"hydra": {"sweeper": {"objectives": objectives}}} if objectives else {}
    sweep_dir.mkdir()
    OmegaConf.save(OmegaConf.create(config), sweep_dir / "multirun.yaml")
    for job, (overrides, status, curve, num_params) in enumerate(outcomes):
        job_dir = sweep_dir / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), job_dir / ".hydra" / "overrides.yaml")
        finite = [v for v in curve if v is not None]
        best = max(finite) if finite else None
        Result(status, best if status == "ok" else None, "val/accuracy", "max",
               best_epoch=curve.index(best) + 1 if best is not None else None,
               best={"val/accuracy": best} if best is not None else {},
               test={"test/accuracy": best - 0.01} if best is not None else {},
               epochs_run=len(curve), num_params=num_params,
               population=population).write(job_dir)
        write_metrics([{"epoch": e + 1, "val/accuracy": v} for e, v in enumerate(curve)],
                      job_dir)


def test_the_study_of_any_sweep_holds_its_trials_curves_and_pareto_front(tmp_path):
    """An in-memory study from job directories: parameters typed from the overrides (a range of
    numbers, log-scaled across two decades; categories), values from result.json, the objective
    per epoch as intermediate values; the figures mark diverged and pruned trials."""
    sweep = tmp_path / "sweep"
    fake_sweep(sweep, [
        (["optimizer.lr=0.001", "activation=relu", "model.width=64"], "ok", [0.5, 0.7, 0.8], 2500),
        (["optimizer.lr=0.01", "activation=tanh", "model.width=128"], "ok", [0.6, 0.9, 0.85],
         2000),
        (["optimizer.lr=0.1", "activation=relu", "model.width=32"], "ok", [0.4, 0.6, 0.7], 400),
        (["optimizer.lr=3.0", "activation=tanh", "model.width=64"], "diverged", [0.2, None], 900),
        (["optimizer.lr=0.05", "activation=relu", "model.width=64"], "pruned", [0.3], 900)],
        objectives=["val/accuracy:max", "num_params:min"],
        population={"label": "population 1/1", "start": 100.0, "end": 103.5, "members": 5,
                    "compile_s": 2.0})
    trials = read_trials(sweep)
    objectives = html_report.sweep_objectives(sweep)
    assert objectives == {"val/accuracy": "max", "num_params": "min"}
    study = html_report.build_study(trials, objectives, sweep)
    lr, act, width = (study.trials[0].distributions[k] for k in
                      ("optimizer.lr", "activation", "model.width"))
    assert (lr.low, lr.high, lr.log) == (0.001, 3.0, True)
    assert act.choices == ("relu", "tanh")
    assert (width.low, width.high, width.log) == (32, 128, False)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 + ["FAIL"] * 2
    assert study.trials[1].values == [0.9, 2000]
    assert study.trials[1].intermediate_values == {1: 0.6, 2: 0.9, 3: 0.85}
    assert study.trials[3].user_attrs["status"] == "diverged"
    assert {t.number for t in study.best_trials} == {1, 2}  # 1 dominates 0
    figures = dict((k, f) for k, _, f in html_report.search_figures(study, objectives))
    assert {"history-0", "history-1", "parallel-0", "slice-0", "importance-0",
            "pareto"} <= set(figures)
    assert sum(len(t.x) for t in figures["pareto"].data) == 3  # every complete trial
    curves, shown = html_report.curves_figure(trials, objectives)
    assert shown == [1, 2, 0, 3, 4]  # the Pareto front first, then the rest, then the marked
    assert [t.line.dash for t in curves.data] == [None, None, None, "dot", "dash"]
    timeline = html_report.timeline_figure(trials)
    assert [(list(b.base), list(b.x)) for b in timeline.data] == [([0.0], [2.0]), ([2.0], [1.5])]
    rungs = html_report.rungs_figure(trials)  # 3 trials ran 3 epochs, one 2, one 1
    assert [list(t.y) for t in rungs.data] == [[5, 4, 3]]
    assert rungs.data[0].name == "1: population 1/1 (1 pruned)"


def test_report_errors_say_what_is_wrong(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "is not a sweep directory: it has no multirun.yaml" in capsys.readouterr().err
    OmegaConf.save(OmegaConf.create({}), tmp_path / "multirun.yaml")
    assert report_main([str(tmp_path)]) == 2
    assert "has no trials yet" in capsys.readouterr().err
    assert report_main([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def vmap_sweep(tmp_path_factory):
    """An 8-trial grid under hpjax's sweeper, trained as one population, report.html written
    at its end (one compile)."""
    import os

    sweep = tmp_path_factory.mktemp("html") / "sweep"
    os.environ["HPJAX_REPORT_HTML"] = "on"
    try:
        multirun(["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=grid",
                  "hydra.sweeper.n_trials=null", "hydra.sweeper.batch_size=8", *GRID], sweep)
    finally:
        os.environ["HPJAX_REPORT_HTML"] = "off"
    return sweep


def test_the_study_tells_the_whole_story(vmap_sweep):
    """Metric names, the objective per epoch, and the result's numbers as user attributes:
    what optuna-dashboard shows."""
    study = optuna.load_study(study_name="hpjax", storage=f"sqlite:///{vmap_sweep}/study.db")
    assert study.metric_names == ["val/accuracy"]
    assert len(study.trials) == 8
    for t in study.trials:
        job_dir = Path(t.user_attrs["job_dir"])
        assert job_dir == vmap_sweep / str(t.number)
        rows = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
        assert t.intermediate_values == {r["epoch"]: r["val/accuracy"] for r in rows}
        result = Result.read(job_dir)
        assert t.user_attrs["status"] == "ok"
        assert t.user_attrs["epochs_run"] == 4
        assert t.user_attrs["num_params"] == result.num_params == 17_539
        assert t.user_attrs["test/accuracy"] == result.test["test/accuracy"]
        assert result.population["members"] == 8 and result.population["label"] == \
            "population 1/1"


def test_report_html_in_chromium(vmap_sweep):
    """The page loads without console errors and every plot has as many points as the sweep
    had trials; a screenshot is saved beside the sweep."""
    require(None if CHROMIUM else "not installed", "Debian's chromium")
    need("playwright.sync_api")
    page_file = vmap_sweep / "report.html"
    assert page_file.stat().st_size > 4_000_000  # Plotly's JavaScript inlined: opens offline
    shot = vmap_sweep / "report.png"
    info, errors = html_report.browse(page_file.as_uri(), shot, chromium=CHROMIUM)
    assert errors == []
    n, params = 8, 2  # optimizer.lr and activation vary; data and epochs are fixed
    assert info["history-0"]["points"] == n  # Optuna's history: one marker per trial
    assert info["slice-0"]["points"] == n * params
    assert info["parallel-0"]["traces"] == n + 1  # one line per trial, and the colour scale
    assert info["importance-0"]["bars"] == params
    assert info["curves"]["traces"] == n and info["curves"]["points"] == n * 4
    assert info["timeline"]["bars"] == 2  # compile and train of the one population
    assert info["table_rows"] == n
    # the table sorts on a click: by trial number, ascending
    assert info["sorted_trials"] == [str(i) for i in range(n)]
    assert shot.stat().st_size > 50_000
