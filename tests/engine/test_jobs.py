"""Trials of several members (seeds, folds) and how a job ends: its files and its value."""

import json

import numpy as np
import pytest

from helpers import compose_config, sgd_configs
from hpjax.config import ConfigError
from hpjax.engine import jobs
from hpjax.engine.loop import train_population


def test_repeats_train_seeds_side_by_side_and_report_their_mean(tmp_path):
    cfgs = sgd_configs([0.1, 0.03], extra=["train.repeats=3", "train.seed=4"])
    outcomes = jobs.train_trials(cfgs, launcher="vmap")
    for trial in outcomes:
        r = trial.result
        assert r.members["seed"] == [4, 5, 6] and r.members["status"] == ["ok"] * 3
        assert r.objective == pytest.approx(np.mean(r.members["objective"]))
        assert r.objective_std == pytest.approx(np.std(r.members["objective"]))
        assert r.test["test/accuracy"] == pytest.approx(np.mean(r.members["test/accuracy"]))
        assert [row["members"] for row in trial.rows] == [3] * 4
    assert len(set(outcomes[0].result.members["objective"])) > 1  # the seeds differ
    # seed 4 of the first trial is the same training as a lone seed-4 run, to float rounding
    lone = train_population([cfgs[0]], launcher="vmap")[0].result
    assert outcomes[0].result.members["objective"][0] == pytest.approx(lone.objective,
                                                                       abs=1 / 270)
    result = jobs.run(compose_config(["train.repeats=2", "train.epochs=2"]), str(tmp_path))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["members"]["seed"] == [0, 1] and saved["objective"] == result.objective


def test_cv_folds_train_side_by_side_and_report_their_mean(tmp_path):
    cfgs = sgd_configs([0.1, 0.03], extra=["data.cv_folds=3", "train.repeats=2"])
    outcomes = jobs.train_trials(cfgs, launcher="vmap")
    for trial in outcomes:
        m = trial.result.members
        assert m["fold"] == [0, 1, 2, 0, 1, 2] and m["seed"] == [0, 0, 0, 1, 1, 1]
        assert trial.result.objective == pytest.approx(np.mean(m["objective"]))
        assert trial.result.objective_std == pytest.approx(np.std(m["objective"]))
        assert len(set(m["objective"])) > 1  # the folds differ
    # fold 2 of seed 0 inside the population is the same training as a lone fold-2 member
    lone = train_population([cfgs[0]], folds=[2], launcher="vmap")[0].result
    assert lone.fold == 2
    inside = outcomes[0].result.members["objective"][2]
    assert inside == pytest.approx(lone.objective, abs=1 / 508)  # one validation sample
    result = jobs.run(compose_config(["data.cv_folds=2", "train.epochs=2"]), str(tmp_path))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["members"]["fold"] == [0, 1] and saved["objective"] == result.objective
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["members"] for r in rows] == [2, 2]


def test_a_job_ends_with_its_files_or_its_error(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    cfg = compose_config(["train.epochs=2"])
    [outcome] = jobs.train_trials([cfg])
    value = jobs.JobEnd(outcome).finish(str(tmp_path / "ok"))
    saved = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert value == saved["objective"] == outcome.result.objective
    assert len((tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()) == 2
    error = ConfigError("model.width", 0, "must be an integer >= 1")
    value = jobs.JobEnd(error=error).finish(str(tmp_path / "bad"), "val/accuracy", "max")
    saved = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert value == -float("inf")
    assert (saved["status"], saved["error"]) == ("failed", "model.width=0: must be an integer >= 1")
    with pytest.raises(ValueError, match="boom"):
        jobs.JobEnd(crash=ValueError("boom")).finish(str(tmp_path / "bad"))
