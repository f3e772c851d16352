"""Config group options that no other test trains, each trained for real at a tiny shape, several
options to a run: model=cnn1d on data=mnist1d, data=diabetes with task.loss=huber, data=wine
with model.norm=rms, data=synthetic, and the schedules besides cosine (the default). Each reaches
a stated score (measured, with margin) and its schedule shows in the logged learning rate.
(Optimizers and activations: tests/engine/test_trainer.py; schedule values: test_optim.py.)"""

import numpy as np
import pytest

from helpers import compose_config
from hpjax.engine.jobs import train_trials

TINY = ["train.early_stopping.patience=null", "model.width=16", "optimizer.lr=1e-2"]


def lr_rises_then_falls(lrs):
    top = int(np.argmax(lrs))
    return 0 < top < len(lrs) - 1 and lrs[-1] < lrs[top]


# (overrides, metric, at least (measured), the logged lr per epoch)
CASES = {
    "cnn1d-mnist1d-onecycle": (
        ["data=mnist1d", "data.n_samples=1000", "model=cnn1d", "model.channels=[8]",
         "schedule=onecycle", "train.epochs=6"],
        "val/accuracy", 0.2,  # 0.29 measured; chance 0.1
        lr_rises_then_falls),
    "diabetes-huber-warmup_cosine": (
        ["data=diabetes", "task=regression", "task.loss=huber", "schedule=warmup_cosine",
         "train.epochs=10"],
        "val/r2", 0.2,  # 0.34 measured
        lr_rises_then_falls),
    "wine-rms-exponential": (
        ["data=wine", "model.norm=rms", "schedule=exponential", "train.epochs=10"],
        "val/accuracy", 0.6,  # 0.78 measured; chance 0.40
        lambda lrs: all(a > b for a, b in zip(lrs, lrs[1:], strict=False))),
    "synthetic-step": (
        ["data=synthetic", "schedule=step", "schedule.boundaries=[0.4]", "train.epochs=5"],
        "val/accuracy", 0.6,  # 0.78 measured
        lambda lrs: lrs[0] == lrs[1] > lrs[2] == lrs[-1]),
    "iris-constant": (
        ["data=iris", "schedule=constant", "optimizer.lr=3e-2", "train.epochs=10"],
        "val/accuracy", 0.7,  # 0.91 measured
        lambda lrs: lrs == pytest.approx([3e-2] * 10)),
}


@pytest.mark.parametrize("name", CASES)
def test_each_config_group_option_trains(name):
    overrides, metric, least, schedule_ok = CASES[name]
    cfg = compose_config([*TINY, *overrides])
    [outcome] = train_trials([cfg])
    result = outcome.result
    assert result.status == "ok"
    assert result.best[metric] >= least
    assert schedule_ok([row["lr"] for row in outcome.rows])
    if "model.norm=rms" in overrides:  # RMSNorm: a scale per unit and no bias (LayerNorm: both)
        k, n = 13, 3  # wine: 13 features, 3 classes; two hidden layers of 16
        assert result.num_params == (k * 16 + 16 + 16) + (16 * 16 + 16 + 16) + (16 * n + n)
