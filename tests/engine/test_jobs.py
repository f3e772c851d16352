"""Trials of several members (seeds, folds) and how a job ends: its files and its value."""

import json

import numpy as np
import pytest

from helpers import SMALL_MLP, sgd_configs
from hpjax.config import ConfigError
from hpjax.engine import jobs

# One worker: a job of two seeds (a population of 2) trains in two tests, compiled once.
pytestmark = pytest.mark.xdist_group("jobs")


def two_seeds():
    """The first trial of the repeats test as a job of 2 seeds."""
    return sgd_configs([0.1], extra=["train.repeats=2", "train.seed=4", *SMALL_MLP])[0]


def test_repeats_train_seeds_side_by_side_and_report_their_mean(tmp_path):
    cfgs = sgd_configs([0.1, 0.03], extra=["train.repeats=3", "train.seed=4", *SMALL_MLP])
    outcomes = jobs.train_trials(cfgs, launcher="vmap")
    for trial in outcomes:
        r = trial.result
        assert r.members["seed"] == [4, 5, 6] and r.members["status"] == ["ok"] * 3
        assert r.objective == pytest.approx(np.mean(r.members["objective"]))
        assert r.objective_std == pytest.approx(np.std(r.members["objective"]))
        assert r.test["test/accuracy"] == pytest.approx(np.mean(r.members["test/accuracy"]))
        assert [row["members"] for row in trial.rows] == [3] * 4
    assert len(set(outcomes[0].result.members["objective"])) > 1  # the seeds differ
    # the first trial as a job of its own with 2 seeds (a population of 2, not of 6): its seed 4
    # is the same training as the seed 4 above, to float rounding, and its files say so
    result = jobs.run(two_seeds(), str(tmp_path))
    assert result.members["objective"][0] == pytest.approx(
        outcomes[0].result.members["objective"][0], abs=1 / 270)  # one validation sample
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["members"]["seed"] == [4, 5] and saved["objective"] == result.objective


def test_cv_folds_train_side_by_side_and_report_their_mean(tmp_path):
    cfgs = sgd_configs([0.1, 0.03], extra=["data.cv_folds=3", "train.repeats=2", *SMALL_MLP])
    outcomes = jobs.train_trials(cfgs, launcher="vmap")
    for trial in outcomes:
        m = trial.result.members
        assert m["fold"] == [0, 1, 2, 0, 1, 2] and m["seed"] == [0, 0, 0, 1, 1, 1]
        assert trial.result.objective == pytest.approx(np.mean(m["objective"]))
        assert trial.result.objective_std == pytest.approx(np.std(m["objective"]))
        assert len(set(m["objective"])) > 1  # the folds differ
    # the first trial as a job of its own with one seed (its 3 folds a population of 3, not of
    # 6): fold 2 is the same training as fold 2 of seed 0 above, and its files say so
    result = jobs.run(sgd_configs([0.1], extra=["data.cv_folds=3", *SMALL_MLP])[0],
                      str(tmp_path))
    assert result.members["fold"] == [0, 1, 2]
    inside = outcomes[0].result.members["objective"][2]
    assert inside == pytest.approx(result.members["objective"][2], abs=1 / 508)  # one sample
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["members"]["fold"] == [0, 1, 2] and saved["objective"] == result.objective
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["members"] for r in rows] == [3] * 4


def test_a_job_ends_with_its_files_or_its_error(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    [outcome] = jobs.train_trials([two_seeds()])
    value = jobs.JobEnd(outcome).finish(str(tmp_path / "ok"))
    saved = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert value == saved["objective"] == outcome.result.objective
    assert len((tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()) == 4
    error = ConfigError("model.width", 0, "must be an integer >= 1")
    value = jobs.JobEnd(error=error).finish(str(tmp_path / "bad"), "val/accuracy", "max")
    saved = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert value == -float("inf")
    assert (saved["status"], saved["error"]) == ("failed", "model.width=0: must be an integer >= 1")
    with pytest.raises(ValueError, match="boom"):
        jobs.JobEnd(crash=ValueError("boom")).finish(str(tmp_path / "bad"))
