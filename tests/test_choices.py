"""Config group options that no other test trains, each trained for real at a tiny shape, several
options to a run: model=cnn1d on data=mnist1d, data=diabetes with task.loss=huber, data=wine
with model.norm=rms, data=synthetic, and the schedules besides cosine (the default). Each reaches
a stated score (measured, with margin) and its schedule shows in the logged learning rate.
(Optimizers and activations: tests/engine/test_trainer.py; schedule values: test_optim.py.)"""

import json

import numpy as np
import pytest

from helpers import compose_config
from hpjax.engine.jobs import train_trials

pytestmark = pytest.mark.xdist_group("choices")  # one worker: the runs `kept` shares

TINY = ["train.early_stopping.patience=null", "model.width=16", "optimizer.lr=1e-2"]
ONE = "model.num_layers=1"  # the MLPs: one hidden layer of 16, the fewest programs' ops to build


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
         "train.epochs=10", ONE],
        "val/r2", 0.2,  # 0.36-0.38 measured (seeds 0-2)
        lr_rises_then_falls),
    "wine-rms-exponential": (
        ["data=wine", "model.norm=rms", "schedule=exponential", "train.epochs=10", ONE],
        "val/accuracy", 0.6,  # 0.82-0.93 measured (seeds 0-2); chance 0.40
        lambda lrs: all(a > b for a, b in zip(lrs, lrs[1:], strict=False))),
    "synthetic-step": (
        ["data=synthetic", "schedule=step", "schedule.boundaries=[0.4]", "train.epochs=5", ONE],
        "val/accuracy", 0.6,  # 0.77-0.79 measured (seeds 0-2)
        lambda lrs: lrs[0] == lrs[1] > lrs[2] == lrs[-1]),
    "iris-constant": (
        ["data=iris", "schedule=constant", "optimizer.lr=3e-2", "train.epochs=10", ONE],
        "val/accuracy", 0.7,  # 0.86 measured (seeds 0-2)
        lambda lrs: lrs == pytest.approx([3e-2] * 10)),
}


def host_metrics(task):
    from hpjax.engine.host_metrics import BY_TASK

    return f"task.host_metrics=[{','.join(sorted(BY_TASK[task]))}]"


# The cases whose job directory a later test reads, with what it adds: each trains once, for
# both tests. Host metrics are computed on the host (the same programs); the trial of two seeds
# trains as a population of two.
KEPT = {"iris-constant": [host_metrics("classification")],
        "diabetes-huber-warmup_cosine": [host_metrics("regression")],
        "synthetic-step": ["train.repeats=2"]}


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """name -> (result, metrics.jsonl rows, job directory) of `hpjax.train` of a KEPT case."""
    import hpjax

    runs = {}

    def run(name):
        if name not in runs:
            job = tmp_path_factory.mktemp(name) / "job"
            result = hpjax.train([*TINY, *CASES[name][0], *KEPT[name]], output_dir=str(job))
            rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
            runs[name] = result, rows, job
        return runs[name]

    return run


@pytest.mark.parametrize("name", CASES)
def test_each_config_group_option_trains(name, kept):
    overrides, metric, least, schedule_ok = CASES[name]
    if name in KEPT:
        result, rows, _ = kept(name)
    else:
        [outcome] = train_trials([compose_config([*TINY, *overrides])])
        result, rows = outcome.result, outcome.rows
    assert result.status == "ok"
    assert result.best[metric] >= least
    assert schedule_ok([row["lr"] for row in rows])
    if "model.norm=rms" in overrides:  # RMSNorm: a scale per unit and no bias (LayerNorm: both)
        k, n = 13, 3  # wine: 13 features, 3 classes; one hidden layer of 16
        assert result.num_params == (k * 16 + 16 + 16) + (16 * n + n)


@pytest.mark.parametrize("name, task", [("iris-constant", "classification"),
                                        ("diabetes-huber-warmup_cosine", "regression")])
def test_every_host_metric_is_scikit_learns_score_of_the_kept_model(kept, name, task):
    """Each of the task's host metrics (task.host_metrics), as a trial reports it for its test
    split, is scikit-learn's score of the predictions of the model `hpjax.load` gives back.
    The runs are those of the option test above (`kept`)."""
    import sklearn.metrics as sk
    from scipy.special import softmax

    import hpjax
    from hpjax.engine.host_metrics import BY_TASK

    names = sorted(BY_TASK[task])
    result, _, job = kept(name)
    model = hpjax.load(str(job))
    out = np.asarray(model.apply(model.data.x_test), np.float64)
    y = model.data.y_test
    if task == "classification":
        labels = out.argmax(-1)
        want = {"f1_macro": sk.f1_score(y, labels, average="macro", zero_division=0),
                "f1_weighted": sk.f1_score(y, labels, average="weighted", zero_division=0),
                "precision_macro": sk.precision_score(y, labels, average="macro",
                                                      zero_division=0),
                "balanced_accuracy": sk.balanced_accuracy_score(y, labels),
                "matthews_corrcoef": sk.matthews_corrcoef(y, labels),
                "cohen_kappa": sk.cohen_kappa_score(y, labels),
                "roc_auc": sk.roc_auc_score(y, softmax(out, -1), multi_class="ovr")}
    else:  # in the targets' own units
        y, pred = y * model.data.y_std + model.data.y_mean, out[:, 0] * model.data.y_std + \
            model.data.y_mean
        want = {"median_absolute_error": sk.median_absolute_error(y, pred),
                "max_error": sk.max_error(y, pred),
                "mean_absolute_percentage_error": sk.mean_absolute_percentage_error(y, pred),
                "explained_variance": sk.explained_variance_score(y, pred)}
    assert sorted(want) == names  # a new host metric needs its line here
    for metric, value in want.items():
        assert result.test[f"test/{metric}"] == pytest.approx(value, rel=1e-4, abs=1e-6), metric


def test_load_gives_each_member_of_a_trial_of_several_seeds(kept):
    """train.repeats=2: the trial keeps each seed's best variables; `hpjax.load(job, member=k)`
    gives member k, and the trial's test metrics are the mean of its members'. (The
    synthetic-step case's run, `kept`.)"""
    import jax

    import hpjax

    result, _, job = kept("synthetic-step")
    members = [hpjax.load(str(job), member=k) for k in (0, 1)]
    a, b = (jax.tree.leaves(m.params) for m in members)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # two seeds
    tests = [m.evaluate()["test/accuracy"] for m in members]
    assert result.test["test/accuracy"] == pytest.approx(np.mean(tests), abs=1e-6)
    with pytest.raises(ValueError) as info:  # no member_2.msgpack: out of range, said so
        hpjax.load(str(job), member=2)
    assert str(info.value) == f"hpjax.load(member=2): {job} is a trial of 2 " \
        "members (train.repeats=2 x data.cv_folds=1); pass member=0 to 1"
