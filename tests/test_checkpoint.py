"""Checkpoints: a trial cut off after a checkpoint continues from it, with the same numbers."""

import json
import logging

import pytest

from conftest import compose_config
from hpjax import engine


class Killed(Exception):
    pass


def kill_at(epoch: int):
    def on_epoch(_: int, row: dict) -> None:
        if row["epoch"] == epoch:
            raise Killed

    return on_epoch


def without_time(rows):
    return [json.dumps({k: v for k, v in r.items() if k != "epoch_time_s"}) for r in rows]


def test_a_killed_trial_continues_from_its_checkpoint(tmp_path, caplog):
    cfg = compose_config(["train.epochs=6", "train.checkpoint_every=2",
                          "train.early_stopping.patience=null"])
    (tmp_path / "whole").mkdir()
    whole = engine.run(cfg, str(tmp_path / "whole"))
    whole_rows = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()

    job = tmp_path / "killed"
    job.mkdir()
    with pytest.raises(Killed):  # killed in epoch 5: the checkpoint of epoch 4 is the latest
        engine.train_population([cfg], on_epoch=kill_at(5),
                                checkpoint_dirs=[engine.checkpoint_dir(str(job))])
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["2", "4"]
    epochs = []
    with caplog.at_level(logging.INFO, logger="hpjax"):
        again = engine.train_population([cfg], on_progress=lambda r: epochs.append(r.epoch),
                                        checkpoint_dirs=[engine.checkpoint_dir(str(job))])[0]
    assert "resumed 1 member from the checkpoint of epoch 4" in caplog.text
    assert epochs == [5, 6]  # epochs 1-4 are not trained again
    assert again.result.resumed_from_epoch == 4 and again.result.epochs_run == 6
    # the same numbers as the run that was never killed, bit for bit
    assert without_time(again.rows) == without_time([json.loads(r) for r in whole_rows])
    assert again.result.objective == whole.objective and again.result.test == whole.test
    # run() into the killed job's directory writes the whole, continuous metrics.jsonl
    result = engine.run(cfg, str(job))
    rows = [json.loads(r) for r in (job / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and result.resumed_from_epoch == 4


def test_a_population_resumes_each_member_and_ignores_another_configs_checkpoint(tmp_path,
                                                                                 caplog):
    cfgs = [compose_config(["optimizer=sgd", f"optimizer.lr={lr}", "train.epochs=4",
                            "train.checkpoint_every=1", "train.early_stopping.patience=null"])
            for lr in (0.1, 0.03, 1e6)]
    dirs = [str(tmp_path / str(i)) for i in range(3)]
    whole = engine.train_population(cfgs)
    with pytest.raises(Killed):
        engine.train_population(cfgs, on_epoch=kill_at(3), checkpoint_dirs=dirs)
    again = engine.train_population(cfgs, checkpoint_dirs=dirs)
    assert [o.result.status for o in again] == ["ok", "ok", "diverged"]
    for a, w in zip(again, whole, strict=True):
        assert a.result.resumed_from_epoch == 2
        assert without_time(a.rows) == without_time(w.rows)
    other = [compose_config(["optimizer=sgd", "optimizer.lr=0.05", "train.epochs=4",
                             "train.checkpoint_every=1"])] * 3
    with caplog.at_level(logging.WARNING, logger="hpjax"):
        fresh = engine.train_population(other, checkpoint_dirs=dirs)
    assert "is of another config: training from the start" in caplog.text
    assert fresh[0].result.resumed_from_epoch is None
