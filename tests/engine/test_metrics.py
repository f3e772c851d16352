"""Host metrics (hpjax.engine.host_metrics): scikit-learn's scores of each trial's best epoch,
computed from the predictions of its kept parameters, as the sweep's objective and in every
report."""

import csv
import json

import numpy as np
import pytest

import hpjax
from helpers import compose_config
from hpjax.config import ConfigError


def raw(model, split: str) -> np.ndarray:
    """A split's samples as the data function gave them (before standardisation)."""
    x = getattr(model.data, f"x_{split}")
    return x.reshape(len(x), -1) * model.data.std + model.data.mean


def test_a_sweep_tuned_for_f1_macro_returns_sklearns_f1_of_the_loaded_model(tmp_path,
                                                                           monkeypatch):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    monkeypatch.chdir(tmp_path)
    sweep = hpjax.sweep(["search=random", "hydra.sweeper.n_trials=4", "data=digits",
                         "model.width=16", "model.num_layers=1", "train.epochs=3",
                         "train.early_stopping.patience=null",
                         "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
                         "objective.metric=val/f1_macro", "task.host_metrics=[balanced_accuracy]"],
                        sweep_dir="sweep")
    values = sorted(t.value for t in sweep.study.trials)
    # the four learning rates give four different scores: the metric separates them
    assert len(set(values)) == 4 and 0 < values[0] < values[-1] < 1
    ranked = sorted(sweep.table, key=lambda r: int(r["rank"]))
    for row in (ranked[0], ranked[-1]):  # the best and the worst trial
        job = sweep.dir / row["trial"]
        model = hpjax.load(job)
        y_val = model.data.classes[model.data.y_val]
        y_test = model.data.classes[model.data.y_test]
        result = json.loads((job / "result.json").read_text())
        f1 = f1_score(y_val, model.predict(raw(model, "val")), average="macro")
        # trained in a population of 4 and loaded alone: the same predicted labels
        assert result["objective"] == pytest.approx(f1, abs=1e-6)
        assert result["best"]["val/f1_macro"] == result["objective"]
        assert result["test"]["test/f1_macro"] == pytest.approx(f1_score(
            y_test, model.predict(raw(model, "test")), average="macro"), abs=1e-6)
        assert result["best"]["val/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(
            y_val, model.predict(raw(model, "val"))), abs=1e-6)
        assert float(row["val/f1_macro"]) == result["objective"]
        assert float(row["test/f1_macro"]) == result["test"]["test/f1_macro"]
    assert sweep.best.objective == max(values)
    assert [t.user_attrs["test/f1_macro"] for t in sweep.study.trials] == [
        json.loads((sweep.dir / str(t.number) / "result.json").read_text())["test"][
            "test/f1_macro"] for t in sweep.study.trials]
    header = next(csv.reader((sweep.dir / "summary.csv").open()))
    assert {"val/f1_macro", "test/f1_macro", "val/balanced_accuracy"} <= set(header)


def test_a_host_metric_is_nan_where_the_outputs_are_not_finite():
    from hpjax.engine.host_metrics import score

    y, pred = np.array([1.0, 2.0, 3.0]), np.array([[1.5], [np.nan], [2.0]])
    assert np.isnan(score("regression", ("max_error",), y, pred)["max_error"])
    assert score("regression", ("max_error",), y, np.nan_to_num(pred)) == {"max_error": 2.0}


def test_an_unknown_or_misdirected_host_metric_stops_before_training():
    refused = [  # (overrides, the one line that stops them)
        (["objective.metric=val/f2"], r"^objective\.metric='val/f2': is not a metric of "
         r"task=classification: one of val/loss, .*val/f1_macro, .*val/roc_auc$"),
        (["task.host_metrics=[f1_macro,r2x]"], r"^task\.host_metrics=\['f1_macro','r2x'\]: 'r2x' "
         r"is not a host metric of task=classification: any of f1_macro, "),
        (["task=regression", "data=diabetes", "objective.metric=val/max_error"],
         r"^objective\.mode='max': val/max_error is better when lower: set objective.mode=min$"),
        (["task=regression", "objective.metric=val/f1_macro"],
         "is not a metric of task=regression"),
        # the epochs' own metrics too: a loss is better lower (the default mode is max)
        (["objective.metric=val/loss"],
         r"^objective\.mode='max': val/loss is better when lower: set objective\.mode=min$"),
        (["task=regression", "data=diabetes", "objective.mode=min"],
         r"^objective\.mode='min': val/r2 is better when higher: set objective\.mode=max$"),
    ]
    for overrides, message in refused:
        with pytest.raises(ConfigError, match=message):
            compose_config(overrides)
    cfg = compose_config(["objective.metric=val/loss", "objective.mode=min"])
    assert (cfg.objective.metric, cfg.objective.mode) == ("val/loss", "min")
    from hpjax.engine.jobs import train_trials
    from hpjax.engine.schedulers.base import FullTraining

    with pytest.raises(ConfigError, match=r"^objective\.metric='val/f1_macro': is a host metric, "
                       "known once a trial ends; multi-fidelity search"):
        train_trials([compose_config(["objective.metric=val/f1_macro"])],
                     scheduler=FullTraining())
