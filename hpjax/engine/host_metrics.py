"""Host metrics: scikit-learn's scores of a member's best epoch, from its predictions.

The compiled program reports the metrics a sum over batches gives (loss, accuracy, mse, r2).
Scores that need every prediction at once (F1, ROC AUC, a median) are computed here, on the host,
once per member when it leaves the population: its best epoch's parameters (kept on the device
anyway) predict the validation and test splits in one compiled pass, and scikit-learn scores them.
They land in `result.json` as `val/<name>` and `test/<name>`, beside the device metrics, and
`objective.metric=val/<name>` makes one the sweep's objective. Nothing trains a second time.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hpjax.config.task import HOST_METRIC_MODES, host_metric_names


@dataclass(frozen=True)
class HostMetric:
    """A scikit-learn score: `mode` says which way is better; `score(y_true, outputs)` takes the
    labels (class indices) or targets (their own units) and the model's outputs (logits, or
    predictions in the targets' units)."""

    mode: str
    score: Callable[[np.ndarray, np.ndarray], float]
    doc: str


def _labels(score: Callable, **kwargs) -> Callable:
    return lambda y, out: score(y, np.argmax(out, -1), **kwargs)


def _roc_auc(y: np.ndarray, logits: np.ndarray) -> float:
    from scipy.special import softmax
    from sklearn.metrics import roc_auc_score

    p = softmax(logits.astype(np.float64), -1)
    if p.shape[-1] == 2:
        return roc_auc_score(y, p[:, 1])
    return roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(p.shape[-1]))


def _per_target(score: Callable) -> Callable:
    """A single-target score averaged over the targets (scikit-learn's uniform average)."""
    def mean(y: np.ndarray, pred: np.ndarray) -> float:
        y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
        return float(np.mean([score(y[:, j], pred[:, j]) for j in range(y.shape[1])]))
    return mean


def _sk(name: str) -> Callable:
    def call(*args, **kwargs):
        import sklearn.metrics

        return getattr(sklearn.metrics, name)(*args, **kwargs)
    return call


CLASSIFICATION = {
    "f1_macro": HostMetric("max", _labels(_sk("f1_score"), average="macro", zero_division=0),
                           "F1 per class, unweighted mean"),
    "f1_weighted": HostMetric("max", _labels(_sk("f1_score"), average="weighted",
                                             zero_division=0), "F1 per class, weighted by support"),
    "precision_macro": HostMetric("max", _labels(_sk("precision_score"), average="macro",
                                                 zero_division=0), "precision per class, mean"),
    "balanced_accuracy": HostMetric("max", _labels(_sk("balanced_accuracy_score")),
                                    "recall per class, unweighted mean"),
    "matthews_corrcoef": HostMetric("max", _labels(_sk("matthews_corrcoef")),
                                    "Matthews correlation coefficient, -1 to 1"),
    "cohen_kappa": HostMetric("max", _labels(_sk("cohen_kappa_score")),
                              "Cohen's kappa, agreement beyond chance"),
    "roc_auc": HostMetric("max", _roc_auc, "area under the ROC curve of the softmax "
                          "probabilities (several classes: one-vs-rest, macro mean)"),
}

REGRESSION = {
    "median_absolute_error": HostMetric("min", _per_target(_sk("median_absolute_error")),
                                        "median of |error|, in the targets' units"),
    "max_error": HostMetric("min", _per_target(_sk("max_error")),
                            "largest |error|, in the targets' units"),
    "mean_absolute_percentage_error": HostMetric(
        "min", _per_target(_sk("mean_absolute_percentage_error")),
        "mean of |error| / |target| (a fraction, not %)"),
    "explained_variance": HostMetric("max", _per_target(_sk("explained_variance_score")),
                                     "explained variance score, at most 1"),
}

BY_TASK = {"classification": CLASSIFICATION, "binary": CLASSIFICATION, "regression": REGRESSION}
# the config validates objectives against its own table of names and modes: the two agree
assert {t: {n: m.mode for n, m in ms.items()} for t, ms in BY_TASK.items()} == HOST_METRIC_MODES


names = host_metric_names


def requested(cfg) -> tuple:
    """The host metrics a member computes: `task.host_metrics` and the objective's own."""
    wanted = [*cfg.task.host_metrics]
    metric = cfg.objective.metric.split("/", 1)[-1]
    if metric in names(cfg.task.name):
        wanted.append(metric)
    return tuple(dict.fromkeys(wanted))


def score(task: str, wanted: tuple, y: np.ndarray, outputs: np.ndarray) -> dict:
    """{name: value} of the `wanted` host metrics; NaN where the outputs are not finite or the
    score is undefined (ROC AUC with a class missing from the split)."""
    out = {}
    if task == "binary":  # one logit z: as the two logits (0, z), whose softmax is (1-p, p)
        outputs = np.concatenate([np.zeros_like(outputs), outputs], -1)
    finite = bool(np.all(np.isfinite(outputs)))
    for name in wanted:
        value = math.nan
        if finite:
            try:
                value = float(BY_TASK[task][name].score(y, outputs))
            except ValueError:
                pass
        out[name] = value
    return out
