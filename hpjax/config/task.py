"""Schemas of the `task` group: what the model's outputs mean, its loss and its metrics."""

from dataclasses import dataclass

from omegaconf import MISSING

from hpjax.config._schema import Schema, per_member, traced

LOSSES = ("mse", "huber")

# scikit-learn scores computed on the host (`hpjax.engine.host_metrics`), and which way is better
_CLASSIFICATION_HOST = {"f1_macro": "max", "f1_weighted": "max", "precision_macro": "max",
                        "balanced_accuracy": "max", "matthews_corrcoef": "max",
                        "cohen_kappa": "max", "roc_auc": "max"}
HOST_METRIC_MODES = {
    "classification": _CLASSIFICATION_HOST, "binary": _CLASSIFICATION_HOST,
    "regression": {"median_absolute_error": "min", "max_error": "min",
                   "mean_absolute_percentage_error": "min", "explained_variance": "max"},
}


def host_metric_names(task: str) -> tuple:
    """The host metrics of a task, by name (without `val/`)."""
    return tuple(HOST_METRIC_MODES.get(task, {}))


@dataclass
class TaskConfig(Schema):
    group = "task"
    # classification or regression
    name: str = MISSING
    # The default objective (objective.metric reads it) and its mode
    metric: str = "val/accuracy"
    mode: str = "max"
    # scikit-learn metrics computed on the host from the best epoch's predictions of the
    # validation and test splits, reported as val/<name> and test/<name>
    # (hpjax.engine.host_metrics); objective.metric=val/<name> computes its own
    host_metrics: list[str] = per_member(default_factory=list)

    def __post_init__(self) -> None:
        self._check_name()
        self._check_choice("metric", self.metrics())
        self._check_choice("mode", ("min", "max"))
        allowed = host_metric_names(self.name)
        for name in self.host_metrics:
            self._check("host_metrics", name in allowed,
                        f"{name!r} is not a host metric of task={self.name}: any of "
                        f"{', '.join(allowed)}")

    @classmethod
    def metrics(cls) -> tuple:
        """The metrics of this task's epochs (`train/*`, `val/*`; `test/*` as `val/*`)."""
        raise NotImplementedError

    @classmethod
    def objectives(cls) -> tuple:
        """What `objective.metric` may name: the epochs' metrics and the host metrics."""
        return cls.metrics() + tuple(f"val/{n}" for n in host_metric_names(cls.choice))


# what a classification task (softmax or sigmoid) reports each epoch
ACCURACY_METRICS = ("val/loss", "val/accuracy", "train/loss", "train/accuracy")
# which way each epoch metric is better (an objective the other way is a mistake)
EPOCH_METRIC_MODES = {"loss": "min", "mse": "min", "mae": "min", "accuracy": "max", "r2": "max"}


@dataclass
class ClassificationTaskConfig(TaskConfig, choice="classification"):
    """One logit per class, softmax cross-entropy (with `train.label_smoothing`), accuracy."""

    name: str = "classification"

    @classmethod
    def metrics(cls) -> tuple:
        return ACCURACY_METRICS


@dataclass
class BinaryTaskConfig(TaskConfig, choice="binary"):
    """Two classes and one logit: sigmoid binary cross-entropy (Optax; `train.label_smoothing`
    pulls the targets toward 0.5), a sample predicted positive when its logit is > 0. The
    model's output size is 1 (a `_target_` module's `num_classes: 1`)."""

    name: str = "binary"

    @classmethod
    def metrics(cls) -> tuple:
        return ACCURACY_METRICS


@dataclass
class RegressionTaskConfig(TaskConfig, choice="regression"):
    """One output per target, mean squared error or Huber loss (Optax), on targets standardised
    with the training split's mean and std; `mse` and `mae` are reported in the targets' units,
    `r2` is the coefficient of determination (scikit-learn's `r2_score`)."""

    name: str = "regression"
    metric: str = "val/r2"
    # mse or huber (optax.huber_loss)
    loss: str = "mse"
    # Huber's delta, in standardised target units
    huber_delta: float = traced(1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("loss", LOSSES)
        self._check_positive("huber_delta")

    @classmethod
    def metrics(cls) -> tuple:
        return ("val/loss", "val/mse", "val/mae", "val/r2", "train/loss", "train/mae")
