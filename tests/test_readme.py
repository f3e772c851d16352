"""The README's commands stay true: CI runs exactly its test command, under CI=1, and the main
command runs (in this process, at a small n_trials) and leaves what the README says it does."""

import json
import re
import shlex
import stat
import tomllib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import multirun, read_summary

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CI = (ROOT / ".ci" / "run").read_text()


def test_ci_runs_the_readme_test_command_in_a_fresh_virtualenv_under_ci():
    command = CI.strip().splitlines()[-1]
    assert command in README
    assert command.endswith("pytest -q")
    assert "python3 -m venv --clear .venv" in command  # no stale packages from an earlier run
    # tests/conftest.py fails a skipped test when CI is set, and helpers.require a missing service
    assert re.search(r"^export CI=1$", CI, re.MULTILINE)
    assert CI.index("export CI=1") < CI.index(command)


def test_pytest_refuses_unknown_markers():
    assert "--strict-markers" in PYPROJECT["tool"]["pytest"]["ini_options"]["addopts"]


def test_the_test_extra_covers_every_optional_extras_packages():
    """What CI installs (`.[test,gp]`, PyTorch pinned beside it) has every optional extra's
    packages, so no test of a tracker, the dashboard or a launcher can skip for want of one. The
    `cuda` extra alone is left out: CI has no GPU."""
    from packaging.requirements import Requirement

    extras = PYPROJECT["project"]["optional-dependencies"]
    installed = re.search(r"-e '\.\[([a-z0-9_,]+)\]'", CI.strip().splitlines()[-1]).group(1)
    assert "test" in installed.split(",")
    names = lambda reqs: {Requirement(r).name.lower().replace("_", "-") for r in reqs}  # noqa: E731
    covered = set().union(*(names(extras[e]) for e in installed.split(",")))
    for extra, reqs in extras.items():
        if extra != "cuda":
            assert names(reqs) <= covered, f"extra {extra!r}: {names(reqs) - covered} not tested"


def test_wheel_packages_every_config_group():
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    groups = {f"hpjax.conf.{p.name}" for p in (ROOT / "conf").iterdir() if p.is_dir()}
    assert groups <= set(packages)


def main_command() -> list[str]:
    """The arguments of `hpjax` in the README's first command (`... && .venv/bin/hpjax -m ...`)."""
    line = next(line for line in README.splitlines() if ".venv/bin/hpjax -m" in line)
    return shlex.split(line.split(".venv/bin/hpjax", 1)[1])


# The README's main command at 2 trials of 2 epochs. At the preset's seed 0 qmc's first two Sobol
# points have two widths (model.width=256 and 128): two static signatures, each a population of
# one, whose programs are built twice over; at seed 4 both have model.width=64: one population of
# two, one set of programs (its other values differ: traced).
SMALL = ["hydra.sweeper.n_trials=2", "train.epochs=2", "hydra.sweeper.seed=4"]


@pytest.fixture(scope="module")
def main_sweep(tmp_path_factory):
    args = main_command()
    assert args == ["-m", "search=qmc"]
    sweep = tmp_path_factory.mktemp("readme") / "sweep"
    multirun([*args[1:], *SMALL, "train.save_params=best"], sweep)
    return sweep


def test_the_readme_main_command_runs_the_qmc_preset(main_sweep):
    assert "README's main command" in (ROOT / "conf" / "search" / "qmc.yaml").read_text()
    rows = read_summary(main_sweep)
    assert [r["status"] for r in rows] == ["ok"] * 2
    results = [json.loads((main_sweep / r["trial"] / "result.json").read_text()) for r in rows]
    # 2 epochs on digits reach far above chance (0.1) at both points: measured 0.94 and 0.96
    assert min(r["objective"] for r in results) > 0.5
    best = next(r for r in rows if r["rank"] == "1")
    assert float(best["val/accuracy"]) == pytest.approx(max(r["objective"] for r in results))
    assert OmegaConf.load(main_sweep / "multirun.yaml").hydra.sweeper.algorithm == "qmc"
    # the sweep holds configs and, in its study, every trial: the user's only
    assert stat.S_IMODE(main_sweep.stat().st_mode) == 0o700


def test_the_report_cli_rebuilds_the_summary_and_best_config(main_sweep, capsys):
    from hpjax.report import main as report_main

    before = (main_sweep / "summary.csv").read_text()
    (main_sweep / "summary.csv").unlink()
    (main_sweep / "best.yaml").unlink()
    assert report_main([str(main_sweep), "--no-html"]) == 0  # python -m hpjax.report DIR
    assert (main_sweep / "summary.csv").read_text() == before
    best = min(read_summary(main_sweep), key=lambda r: int(r["rank"]))
    again = OmegaConf.load(main_sweep / "best.yaml")  # the config, with its group choices
    ran = OmegaConf.load(main_sweep / best["trial"] / ".hydra" / "config.yaml")
    assert {k: again[k] for k in again if k != "defaults"} == ran
    assert {"override activation": ran.activation.name} in again.defaults
    assert "2 trials, ranked by val/accuracy" in capsys.readouterr().out


def test_the_best_trial_loads_with_its_metrics(main_sweep):
    import hpjax

    best = min(read_summary(main_sweep), key=lambda r: int(r["rank"]))
    model = hpjax.load(str(main_sweep / best["trial"]))
    # recomputed from the kept parameters: the trial trained in a population of two, float
    # rounding apart from a single evaluation (one sample of the 270 is 0.0037 of accuracy)
    assert model.evaluate() == pytest.approx(model.result.test, rel=1e-6)
    assert model.evaluate("val")["val/accuracy"] == pytest.approx(model.result.objective,
                                                                 abs=1e-6)


def test_optuna_dashboard_serves_the_sweeps_study(main_sweep):
    """`optuna-dashboard sqlite:///<sweep dir>/study.db` (the README): its API lists the study
    with the sweep's trials."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    app = wsgi(f"sqlite:///{main_sweep / 'study.db'}")
    statuses = []

    def get(path):
        environ = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        return json.loads(b"".join(app(environ, lambda status, headers, *_: statuses.append(
            status))))

    [study] = get("/api/studies")["study_summaries"]
    assert study["study_name"] == "hpjax"
    detail = get(f"/api/studies/{study['study_id']}")
    assert len(detail["trials"]) == 2
    assert detail["has_intermediate_values"]  # the learning curves: each epoch's objective
    assert statuses == ["200 OK"] * 2


@pytest.mark.parametrize("ci, seen_up, asked", [("1", False, 3), ("", True, 3), ("", False, 1)])
def test_a_service_is_asked_again_under_ci_or_once_seen_up(monkeypatch, ci, seen_up, asked):
    """A cluster busy with the tests beside it can answer late or show its node between two
    jobs: under CI (where it was started) or once seen up, a test asks again before failing; on
    a developer's machine without it, a test skips at once."""
    import helpers

    answers = iter(["sinfo exited 1: Socket timed out on send/recv operation", "completing?",
                    None])
    calls = []
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(helpers, "_seen_up", {"slurm"} if seen_up else set())
    monkeypatch.setattr(helpers.time, "sleep", lambda s: calls.append(s))
    down = helpers._service("slurm", lambda: next(answers), patience=60)
    assert len(calls) + 1 == asked
    assert down == (None if asked == 3 else
                    "sinfo exited 1: Socket timed out on send/recv operation")
    assert ("slurm" in helpers._seen_up) == (down is None or seen_up)
