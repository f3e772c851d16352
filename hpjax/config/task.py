"""Schemas of the `task` group: what the model's outputs mean, its loss and its metrics."""

from dataclasses import dataclass

from omegaconf import MISSING

from hpjax.config._schema import Schema, traced

LOSSES = ("mse", "huber")


@dataclass
class TaskConfig(Schema):
    group = "task"
    # classification or regression
    name: str = MISSING
    # The default objective (objective.metric reads it) and its mode
    metric: str = "val/accuracy"
    mode: str = "max"

    def __post_init__(self) -> None:
        self._check_name()
        self._check_choice("metric", self.metrics())
        self._check_choice("mode", ("min", "max"))

    @classmethod
    def metrics(cls) -> tuple:
        """The metrics of this task's epochs (`train/*`, `val/*`; `test/*` as `val/*`)."""
        raise NotImplementedError


@dataclass
class ClassificationTaskConfig(TaskConfig, choice="classification"):
    """One logit per class, softmax cross-entropy (with `train.label_smoothing`), accuracy."""

    name: str = "classification"

    @classmethod
    def metrics(cls) -> tuple:
        return ("val/loss", "val/accuracy", "train/loss", "train/accuracy")


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
