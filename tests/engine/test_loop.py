"""The host loop: early stopping, checkpoints and resume, and every per-member key read for each
member of a population."""

import json
import logging

import pytest

from helpers import SMALL_MLP, Killed, compose_config, kill_at
from hpjax.engine import jobs
from hpjax.engine.loop import train_population

# One worker: the SGD populations of 4 (4 epochs) of three tests share their program.
pytestmark = pytest.mark.xdist_group("loop")


def without_time(rows):
    return [json.dumps({k: v for k, v in r.items() if k != "epoch_time_s"}) for r in rows]


def test_a_killed_trial_continues_from_its_checkpoint(tmp_path, caplog):
    cfg = compose_config(["train.epochs=6", "train.checkpoint_every=2",
                          "train.early_stopping.patience=null", *SMALL_MLP])
    (tmp_path / "whole").mkdir()
    whole = jobs.run(cfg, str(tmp_path / "whole"))
    whole_rows = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()

    job = tmp_path / "killed"
    job.mkdir()
    with pytest.raises(Killed):  # killed in epoch 5: the checkpoint of epoch 4 is the latest
        train_population([cfg], on_epoch=kill_at(5),
                         checkpoint_dirs=[jobs.checkpoint_dir(str(job))])
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["2", "4"]
    epochs = []
    with caplog.at_level(logging.INFO, logger="hpjax"):
        again = train_population([cfg], on_progress=lambda r: epochs.append(r.epoch),
                                 checkpoint_dirs=[jobs.checkpoint_dir(str(job))])[0]
    assert "resumed 1 member from the checkpoint of epoch 4" in caplog.text
    assert epochs == [5, 6]  # epochs 1-4 are not trained again
    assert again.result.resumed_from_epoch == 4 and again.result.epochs_run == 6
    # the same numbers as the run that was never killed, bit for bit
    assert without_time(again.rows) == without_time([json.loads(r) for r in whole_rows])
    assert again.result.objective == whole.objective and again.result.test == whole.test
    # run() into the killed job's directory writes the whole, continuous metrics.jsonl
    result = jobs.run(cfg, str(job))
    rows = [json.loads(r) for r in (job / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and result.resumed_from_epoch == 4


def test_a_population_resumes_each_member_and_ignores_another_configs_checkpoint(tmp_path,
                                                                                 caplog):
    cfgs = [compose_config(["optimizer=sgd", f"optimizer.lr={lr}", "train.epochs=4",
                            "train.checkpoint_every=1", "train.early_stopping.patience=null",
                            *SMALL_MLP])
            for lr in (0.1, 0.03, 1e6)]
    dirs = [str(tmp_path / str(i)) for i in range(3)]
    whole = train_population(cfgs)
    with pytest.raises(Killed):
        train_population(cfgs, on_epoch=kill_at(3), checkpoint_dirs=dirs)
    again = train_population(cfgs, checkpoint_dirs=dirs)
    assert [o.result.status for o in again] == ["ok", "ok", "diverged"]
    for a, w in zip(again, whole, strict=True):
        assert a.result.resumed_from_epoch == 2
        assert without_time(a.rows) == without_time(w.rows)
    other = [compose_config(["optimizer=sgd", "optimizer.lr=0.05", "train.epochs=4",
                             "train.checkpoint_every=1", *SMALL_MLP])] * 3
    with caplog.at_level(logging.WARNING, logger="hpjax"):
        fresh = train_population(other, checkpoint_dirs=dirs)
    assert "is of another config: training from the start" in caplog.text
    assert fresh[0].result.resumed_from_epoch is None


def test_early_stopping_freezes_one_member_and_keeps_its_best_epoch():
    cfgs = [compose_config(["optimizer=sgd", "optimizer.lr=0.1", "train.epochs=4", *SMALL_MLP,
                            *extra])
            for extra in (["train.early_stopping.patience=null"],
                          ["train.early_stopping.patience=1", "train.early_stopping.min_delta=10"])]
    # twice over: a population of 4, the program of the other tests' populations here
    stopped, full, *_ = train_population(cfgs * 2, launcher="vmap")
    assert stopped.result.stopped_early is False and full.result.stopped_early is True
    assert full.result.epochs_run == 2 and full.result.best_epoch == 1
    assert stopped.result.epochs_run == 4
    # member 1's first epoch equals member 0's: both ran the same config until member 1 froze
    assert full.rows[0]["val/loss"] == stopped.rows[0]["val/loss"]


def test_every_per_member_key_is_each_members_own(tmp_path):
    """Trials that differ only in per-member keys share one population (one program), and each
    behaves by its own settings, not by the first member's."""
    base = ["optimizer=sgd", "optimizer.lr=0.1", "train.epochs=4", *SMALL_MLP]
    variants = [
        ["train.checkpoint_every=0", "train.early_stopping.patience=null"],
        ["train.checkpoint_every=1", "train.early_stopping.patience=null",
         "objective.metric=val/loss", "objective.mode=min"],
        ["train.checkpoint_every=2", "train.early_stopping.patience=1",
         "train.early_stopping.min_delta=10"],
        ["train.checkpoint_every=0", "train.early_stopping.monitor=train/loss",
         "train.early_stopping.mode=max", "train.early_stopping.patience=null"],
    ]
    cfgs = [compose_config(base + v) for v in variants]
    dirs = [str(tmp_path / str(i)) for i in range(4)]
    out = [o.result for o in train_population(cfgs, checkpoint_dirs=dirs)]
    saved = [sorted(int(p.name) for p in (tmp_path / str(i)).iterdir())
             if (tmp_path / str(i)).is_dir() else [] for i in range(4)]
    assert saved[0] == [] and saved[3] == []  # checkpoint_every=0: nothing saved
    assert saved[1][-2:] == [2, 3]  # every epoch but the last, the manager keeps two
    assert saved[2] == [2]  # every 2 epochs; it stopped early after epoch 2
    assert out[1].objective_metric == "val/loss" and out[1].objective == out[1].best["val/loss"]
    assert out[0].objective_metric == "val/accuracy"
    assert out[0].objective == out[0].best["val/accuracy"]
    assert (out[2].stopped_early, out[2].epochs_run, out[2].best_epoch) == (True, 2, 1)
    assert not out[0].stopped_early and out[0].epochs_run == 4
    assert out[3].best_epoch == 1  # train/loss in max mode: the first epoch stays best
