"""Config schemas: one dataclass per choice of each config group, stored as `base_*`.

Every YAML file under `conf/<group>/` extends one of these schemas (`defaults: [base_adam]`), so
Hydra rejects unknown keys and wrong types on merge. Value checks live in `__post_init__` and run
once, when `hpjax.app` turns the composed DictConfig into these objects with `OmegaConf.to_object`.
"""

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ACTIVATIONS = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "sigmoid", "softplus")
ACTIVATION_ALIASES = {"swish": "silu"}
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lamb", "lion")
SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup_cosine", "onecycle")
SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer")
NORMS = ("none", "layer", "rms")
METRICS = ("val/loss", "val/accuracy", "train/loss", "train/accuracy")
MODES = ("min", "max")


class ConfigError(ValueError):
    """A config value that hpjax cannot run with: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if value == MISSING:
        return MISSING
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


class _Checked:
    """Mixin: `self._check(name, ok, allowed)` raises a ConfigError keyed by the group path."""

    _path: ClassVar[str] = ""

    def _check(self, name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{self._path}.{name}", getattr(self, name), allowed)

    def _check_choice(self, name: str, choices: tuple) -> None:
        self._check(name, getattr(self, name) in choices, "must be one of " + ", ".join(choices))

    def _check_fraction(self, name: str, low_open: bool = False) -> None:
        v = getattr(self, name)
        if low_open:
            self._check(name, 0 < v < 1, "must be in (0, 1)")
        else:
            self._check(name, 0 <= v < 1, "must be in [0, 1)")

    def _check_positive(self, name: str) -> None:
        v = getattr(self, name)
        self._check(name, math.isfinite(v) and v > 0, "must be a finite number > 0")

    def _check_non_negative(self, name: str) -> None:
        v = getattr(self, name)
        self._check(name, math.isfinite(v) and v >= 0, "must be a finite number >= 0")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class DataConfig(_Checked):
    _path: ClassVar[str] = "data"
    # Which loader: a scikit-learn set, `synthetic`, `npz` or `csv`
    name: str = MISSING
    # Share of all samples held out for validation (early stopping, the sweep objective)
    val_fraction: float = 0.15
    # Share of all samples held out for the final test metrics
    test_fraction: float = 0.15
    # Seed of the stratified train/validation/test split (fixed, independent of train.seed)
    split_seed: int = 0
    # Standardise every feature with the mean and std of the training split only
    standardize: bool = True
    # Shape of one sample as an image (height, width, channels), needed by model=cnn
    image_shape: Optional[list[int]] = None
    # k >= 2: k-fold cross-validation (stratified) over the training and validation samples, the
    # folds trained side by side; the objective is the mean over folds. 1: one validation split
    cv_folds: int = 1

    def __post_init__(self) -> None:
        self._check_fraction("val_fraction", low_open=True)
        self._check_fraction("test_fraction", low_open=True)
        self._check("test_fraction", self.val_fraction + self.test_fraction < 0.9,
                    "val_fraction + test_fraction must be < 0.9 "
                    f"(val_fraction={self.val_fraction})")
        self._check("cv_folds", self.cv_folds >= 1,
                    "must be an integer >= 1 (1: one validation split, no cross-validation)")
        if self.image_shape is not None:
            self._check("image_shape", len(self.image_shape) == 3 and min(self.image_shape) >= 1,
                        "must be [height, width, channels] of positive integers, or null")


@dataclass
class SklearnDataConfig(DataConfig):
    name: str = "digits"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("name", SKLEARN_DATASETS)


@dataclass
class SyntheticDataConfig(DataConfig):
    """`sklearn.datasets.make_classification`, for benchmarks and tests at any scale."""

    name: str = "synthetic"
    # Number of samples before the split
    n_samples: int = 2000
    # Number of features, of which n_informative carry the signal
    n_features: int = 20
    n_informative: int = 10
    # Linear combinations of the informative features
    n_redundant: int = 0
    n_classes: int = 3
    # Larger values make the classes easier to separate
    class_sep: float = 1.0
    # Share of labels flipped at random (label noise)
    flip_y: float = 0.01
    # Seed of the generator (the data itself, not the split)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("n_classes", self.n_classes >= 2, "must be an integer >= 2")
        self._check("n_samples", self.n_samples >= 10 * self.n_classes,
                    f"must be at least 10 * n_classes = {10 * self.n_classes}")
        self._check("n_informative", 1 <= self.n_informative <= self.n_features,
                    f"must be between 1 and n_features={self.n_features}")
        self._check("n_redundant", 0 <= self.n_redundant <= self.n_features - self.n_informative,
                    "must be between 0 and n_features - n_informative")
        self._check("n_classes", self.n_classes <= 2**self.n_informative,
                    f"must be <= 2**n_informative = {2**self.n_informative}")
        self._check_positive("class_sep")
        self._check_fraction("flip_y")


@dataclass
class _FileDataConfig(DataConfig):
    # Path of the file (relative paths are relative to the directory hpjax was started in)
    path: str = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("path", os.path.isfile(self.path), "file not found")


@dataclass
class NpzDataConfig(_FileDataConfig):
    """A NumPy `.npz` file holding a feature array and a label array."""

    name: str = "npz"
    # Array of features, shape (samples, ...)
    x_key: str = "x"
    # Array of labels, shape (samples,)
    y_key: str = "y"


@dataclass
class CsvDataConfig(_FileDataConfig):
    """A CSV file with a header row: one label column, every other column a numeric feature."""

    name: str = "csv"
    # Header name of the column that holds the class labels (numbers or strings)
    label_column: str = "label"
    delimiter: str = ","


# ---------------------------------------------------------------------------------------------
# model and activation
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelConfig(_Checked):
    _path: ClassVar[str] = "model"
    name: str = MISSING
    # Dropout rate after every hidden activation (traced: changing it compiles nothing)
    dropout: float = 0.0
    # Normalisation before every hidden activation
    norm: str = "none"

    def __post_init__(self) -> None:
        self._check_fraction("dropout")
        self._check_choice("norm", NORMS)


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    # Number of hidden layers (ignored when width is a list)
    num_layers: int = 2
    # Units per hidden layer: one integer for every layer, or a list such as [256, 128]
    width: Any = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        w = self.width
        ok = (isinstance(w, int) and not isinstance(w, bool) and w >= 1) or (
            isinstance(w, (list, tuple)) and len(w) >= 1
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in w))
        self._check("width", ok, "must be an integer >= 1 or a non-empty list of them")
        if isinstance(w, int):
            self._check("num_layers", self.num_layers >= 1, "must be an integer >= 1")

    @property
    def widths(self) -> tuple:
        if isinstance(self.width, int):
            return (self.width,) * self.num_layers
        return tuple(self.width)


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    # Output channels of each conv layer
    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    # 2x2 max pooling after every conv layer (skipped once the image is 1 pixel wide)
    pool: bool = True
    # Units of the dense layer before the classifier
    width: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("channels", len(self.channels) >= 1 and min(self.channels) >= 1,
                    "must be a non-empty list of integers >= 1")
        self._check("kernel_size", self.kernel_size >= 1, "must be an integer >= 1")
        self._check("width", self.width >= 1, "must be an integer >= 1")


@dataclass
class ActivationConfig(_Checked):
    _path: ClassVar[str] = "activation"
    # One of ACTIVATIONS (swish is silu); it is a traced index, so changing it compiles nothing
    name: str = "relu"
    # Slope for negative inputs, used by leaky_relu
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        self._check_choice("name", ACTIVATIONS + tuple(ACTIVATION_ALIASES))
        self._check("negative_slope", 0 <= self.negative_slope < 1, "must be in [0, 1)")

    @property
    def index(self) -> int:
        return ACTIVATIONS.index(ACTIVATION_ALIASES.get(self.name, self.name))


# ---------------------------------------------------------------------------------------------
# optimizer and schedule
# ---------------------------------------------------------------------------------------------
@dataclass
class OptimizerConfig(_Checked):
    _path: ClassVar[str] = "optimizer"
    name: str = MISSING
    # Base (peak) learning rate; the schedule scales it over training
    lr: float = 1e-3
    # L2 penalty added to the gradient (sgd, momentum, adam, rmsprop, adagrad) or decoupled
    # weight decay (adamw, lamb, lion); applied to weight matrices and kernels, not biases/scales
    weight_decay: float = 0.0
    # Clip gradients to this global norm before the update; null turns clipping off
    clip_norm: Optional[float] = None

    def __post_init__(self) -> None:
        self._check_choice("name", OPTIMIZERS)
        self._check_positive("lr")
        self._check_non_negative("weight_decay")
        if self.clip_norm is not None:
            self._check_positive("clip_norm")

    def _check_beta(self, name: str) -> None:
        self._check_fraction(name)


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"


@dataclass
class MomentumConfig(OptimizerConfig):
    name: str = "momentum"
    momentum: float = 0.9
    # Nesterov's accelerated gradient (a static choice: conf/optimizer/nesterov.yaml sets it)
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_beta("momentum")


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_beta("b1")
        self._check_beta("b2")
        self._check_positive("eps")


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = 1e-4


@dataclass
class LambConfig(AdamConfig):
    name: str = "lamb"
    eps: float = 1e-6


@dataclass
class LionConfig(OptimizerConfig):
    name: str = "lion"
    lr: float = 3e-4
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_beta("b1")
        self._check_beta("b2")


@dataclass
class RMSPropConfig(OptimizerConfig):
    name: str = "rmsprop"
    # Decay of the running average of squared gradients
    decay: float = 0.9
    eps: float = 1e-8
    momentum: float = 0.0
    # Divide by the centred second moment (a static choice)
    centered: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_beta("decay")
        self._check_beta("momentum")
        self._check_positive("eps")


@dataclass
class AdagradConfig(OptimizerConfig):
    name: str = "adagrad"
    initial_accumulator_value: float = 0.1
    eps: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_non_negative("initial_accumulator_value")
        self._check_positive("eps")


@dataclass
class ScheduleConfig(_Checked):
    """Learning-rate schedule; fractions are of the whole run (train.epochs), so they stay
    meaningful when a sweep changes the number of epochs."""

    _path: ClassVar[str] = "schedule"
    name: str = MISSING

    def __post_init__(self) -> None:
        self._check_choice("name", SCHEDULES)


@dataclass
class ConstantScheduleConfig(ScheduleConfig):
    name: str = "constant"


@dataclass
class StepScheduleConfig(ScheduleConfig):
    name: str = "step"
    # Fractions of training at which the learning rate is multiplied by gamma
    boundaries: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        b = list(self.boundaries)
        self._check("boundaries", len(b) >= 1 and all(0 < x < 1 for x in b) and b == sorted(b),
                    "must be a non-empty increasing list of fractions in (0, 1)")
        self._check_positive("gamma")


@dataclass
class ExponentialScheduleConfig(ScheduleConfig):
    name: str = "exponential"
    # Factor applied to the learning rate per epoch
    decay_rate: float = 0.95
    # Decay in whole-epoch steps instead of continuously
    staircase: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("decay_rate", 0 < self.decay_rate <= 1, "must be in (0, 1]")


@dataclass
class CosineScheduleConfig(ScheduleConfig):
    name: str = "cosine"
    # Final learning rate as a fraction of optimizer.lr
    end_ratio: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("end_ratio", 0 <= self.end_ratio <= 1, "must be in [0, 1]")


@dataclass
class WarmupCosineScheduleConfig(CosineScheduleConfig):
    name: str = "warmup_cosine"
    # Fraction of training spent warming up linearly from init_ratio * lr to lr
    warmup_fraction: float = 0.1
    init_ratio: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("warmup_fraction", low_open=True)
        self._check("init_ratio", 0 <= self.init_ratio <= 1, "must be in [0, 1]")


@dataclass
class OneCycleScheduleConfig(ScheduleConfig):
    """`optax.cosine_onecycle_schedule`: from lr/div_factor up to lr, then down to
    lr/(div_factor*final_div_factor). The two factors shape the program (optax checks them in
    Python), so changing them compiles again; lr stays traced."""

    name: str = "onecycle"
    # Fraction of training spent rising to the peak
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("pct_start", low_open=True)
        self._check("div_factor", self.div_factor >= 1, "must be >= 1")
        self._check("final_div_factor", self.final_div_factor >= 1, "must be >= 1")


# ---------------------------------------------------------------------------------------------
# training, objective, root
# ---------------------------------------------------------------------------------------------
@dataclass
class EarlyStoppingConfig(_Checked):
    _path: ClassVar[str] = "train.early_stopping"
    # Stop after this many epochs without improvement of the monitored metric; null turns it off
    patience: Optional[int] = 10
    # Smallest change of the monitored metric that counts as an improvement
    min_delta: float = 0.0
    # Metric watched for early stopping and for choosing the best epoch
    monitor: str = "val/loss"
    # Whether the monitored metric improves when it goes down (min) or up (max)
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.patience is not None:
            self._check("patience", self.patience >= 1, "must be an integer >= 1, or null for off")
        self._check_non_negative("min_delta")
        self._check_choice("monitor", METRICS)
        self._check_choice("mode", MODES)


@dataclass
class TrainConfig(_Checked):
    _path: ClassVar[str] = "train"
    # Passes over the training split
    epochs: int = 30
    # Samples per optimizer step; the last partial batch of each epoch is dropped
    batch_size: int = 64
    # Root seed: parameter init, dropout masks and the data order per epoch
    seed: int = 0
    # Label smoothing of the cross-entropy loss
    label_smoothing: float = 0.0
    # Samples per evaluation step (memory only: results do not depend on it)
    eval_batch_size: int = 1024
    # Seeds per trial (seed, seed+1, ...) trained side by side; the objective is their mean
    repeats: int = 1
    # Save each trial's state (Orbax) every this many epochs, into checkpoints/ in its job
    # directory; a trial run again into the same directory continues from there. 0: off
    checkpoint_every: int = 0
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self) -> None:
        self._check("epochs", self.epochs >= 1, "must be an integer >= 1")
        self._check("batch_size", self.batch_size >= 1,
                    "must be an integer between 1 and the training-set size")
        self._check("seed", self.seed >= 0, "must be an integer >= 0")
        self._check_fraction("label_smoothing")
        self._check("eval_batch_size", self.eval_batch_size >= 1, "must be an integer >= 1")
        self._check("repeats", self.repeats >= 1, "must be an integer >= 1")
        self._check("checkpoint_every", self.checkpoint_every >= 0,
                    "must be an integer >= 0 (0: no checkpoints)")


@dataclass
class ObjectiveConfig(_Checked):
    _path: ClassVar[str] = "objective"
    # Metric the task function returns to the sweeper, taken at the best epoch
    metric: str = "val/accuracy"
    # Whether the sweep should maximise or minimise it
    mode: str = "max"

    def __post_init__(self) -> None:
        self._check_choice("metric", METRICS)
        self._check_choice("mode", MODES)


def worst_objective(mode: str) -> float:
    """The objective a failed or diverged trial hands back: no sweeper can prefer it."""
    return -math.inf if mode == "max" else math.inf


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    activation: ActivationConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    schedule: ScheduleConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


_SCHEMAS = {
    "data": {"sklearn": SklearnDataConfig, "synthetic": SyntheticDataConfig,
             "npz": NpzDataConfig, "csv": CsvDataConfig},
    "model": {"mlp": MLPConfig, "cnn": CNNConfig},
    "activation": {"activation": ActivationConfig},
    "optimizer": {"sgd": SGDConfig, "momentum": MomentumConfig, "adam": AdamConfig,
                  "adamw": AdamWConfig, "lamb": LambConfig, "lion": LionConfig,
                  "rmsprop": RMSPropConfig, "adagrad": AdagradConfig},
    "schedule": {"constant": ConstantScheduleConfig, "step": StepScheduleConfig,
                 "exponential": ExponentialScheduleConfig, "cosine": CosineScheduleConfig,
                 "warmup_cosine": WarmupCosineScheduleConfig, "onecycle": OneCycleScheduleConfig},
}


def register_configs() -> None:
    """Stores the root schema as `base_config` and each group's schemas as `<group>/base_<name>`."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schemas in _SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"base_{name}", node=node)


def _unknown_keys(node: DictConfig, obj: Any, prefix: str = "") -> list[str]:
    # `+key=value` on a typed node is accepted by OmegaConf and dropped by to_object: find it.
    unknown = []
    names = {f.name for f in dataclasses.fields(obj)}
    for key in node.keys():
        path = f"{prefix}{key}"
        if key not in names:
            unknown.append(path)
        elif dataclasses.is_dataclass(getattr(obj, key)):
            unknown += _unknown_keys(node[key], getattr(obj, key), path + ".")
    return unknown


def to_config(cfg: DictConfig) -> Config:
    """Validates a composed config once and returns it as typed, checked dataclasses.

    Raises:
      ConfigError: a value is missing, unknown or out of range; the message names the key.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], MISSING,
                          f"must be set, e.g. on the command line: {missing[0]}=...")
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as e:  # OmegaConf wraps errors raised in __post_init__
        cause = e
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        raise (cause or e) from None
    unknown = _unknown_keys(cfg, obj)
    if unknown:
        raise ConfigError(unknown[0], OmegaConf.select(cfg, unknown[0]),
                          "unknown key (added with '+'?): `hpjax --cfg job` lists the keys")
    return obj
