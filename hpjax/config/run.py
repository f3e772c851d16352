"""Schemas of the `train` and `objective` keys, the root config, and its validation."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from hpjax.config._schema import (
    INT32,
    ConfigError,
    Schema,
    check_int32,
    choices,
    groups,
    per_member,
    traced,
)
from hpjax.config.model import ActivationConfig
from hpjax.config.optim import OptimizerConfig, ScheduleConfig
from hpjax.config.target import TARGET, target_config
from hpjax.config.task import EPOCH_METRIC_MODES, HOST_METRIC_MODES, TaskConfig

METRICS = ("val/loss", "val/accuracy", "train/loss", "train/accuracy", "val/mse", "val/mae",
           "val/r2", "train/mae")
MODES = ("min", "max")
SAVE_PARAMS = ("best", "none")


@dataclass
class EarlyStoppingConfig(Schema):
    group = "train.early_stopping"
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
class TrainConfig(Schema):
    group = "train"
    # Passes over the training split
    epochs: int = 30
    # Samples per optimizer step; the last partial batch of each epoch is dropped
    batch_size: int = 64
    # Streamed data: optimizer steps per epoch, the training split read as one sequence of
    # shuffled passes (needed for an endless split: docs/data.md); null: one pass per epoch
    steps_per_epoch: Optional[int] = None
    # Root seed: parameter init, dropout masks and the data order per epoch
    seed: int = traced(0, dtype="int32")
    # Label smoothing of the cross-entropy loss
    label_smoothing: float = traced(0.0)
    # Samples per evaluation step (memory only: results do not depend on it)
    eval_batch_size: int = 1024
    # Seeds per trial (seed, seed+1, ...) trained side by side; the objective is their mean
    repeats: int = per_member(1)
    # Save each trial's state (Orbax) every this many epochs, into checkpoints/ in its job
    # directory; a trial run again into the same directory continues from there. 0: off
    checkpoint_every: int = per_member(0)
    early_stopping: EarlyStoppingConfig = per_member(default_factory=EarlyStoppingConfig)
    # Keep the best epoch's variables (parameters, batch statistics) in params.msgpack of the
    # job directory (Flax's msgpack serialization), for `hpjax.load`: best, or none
    save_params: str = per_member("best")
    # Traced values that change during training, as PBT's best trial did: entries
    # "EPOCH: key=value key=value" set those keys from that epoch on (best_schedule.yaml)
    hparam_schedule: list[str] = per_member(default_factory=list)

    def __post_init__(self) -> None:
        self._check("epochs", self.epochs >= 1, "must be an integer >= 1")
        self._check("batch_size", self.batch_size >= 1,
                    "must be an integer between 1 and the training-set size")
        self._check("seed", self.seed >= 0, "must be an integer >= 0")
        if self.steps_per_epoch is not None:
            self._check("steps_per_epoch", self.steps_per_epoch >= 1,
                        "must be an integer >= 1, or null (an epoch: one pass over the data)")
        self._check_fraction("label_smoothing")
        self._check("eval_batch_size", self.eval_batch_size >= 1, "must be an integer >= 1")
        self._check("repeats", self.repeats >= 1, "must be an integer >= 1")
        # (a seed that does not fit itself is train.seed's error: check_int32)
        self._check("repeats", self.seed > INT32[1] or self.seed + self.repeats - 1 <= INT32[1],
                    f"with train.seed={self.seed}, the last seed (seed+repeats-1) must be at "
                    f"most {INT32[1]} (an int32 in the compiled program)")
        self._check("checkpoint_every", self.checkpoint_every >= 0,
                    "must be an integer >= 0 (0: no checkpoints)")
        self._check_choice("save_params", SAVE_PARAMS)
        for entry in self.hparam_schedule:
            at, colon, items = str(entry).partition(":")
            self._check("hparam_schedule", bool(colon) and at.strip().isdigit() and all(
                "=" in item for item in items.split()),
                f"entries are 'EPOCH: key=value ...', got {entry!r}")


@dataclass
class ObjectiveConfig(Schema):
    group = "objective"
    # Metric the task function returns to the sweeper, taken at the best epoch
    metric: str = per_member("val/accuracy")
    # Whether the sweep should maximise or minimise it
    mode: str = per_member("max")

    def __post_init__(self) -> None:
        # the metric is checked against the task's (`to_config`)
        self._check_choice("mode", MODES)


@dataclass
class Config:
    data: Any = MISSING  # a DataConfig, or a `_target_` node (a TargetDataConfig once validated)
    model: Any = MISSING  # a ModelConfig, or a `_target_` node (a TargetModelConfig once validated)
    activation: ActivationConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    schedule: ScheduleConfig = MISSING
    task: TaskConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


def register_configs() -> None:
    """Stores the root schema as `base_config` and each registered choice as
    `<group>/base_<choice>` in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group in groups():
        for name, node in choices(group).items():
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
    check_int32(obj)
    for group in ("model", "data"):
        node = getattr(obj, group)
        if isinstance(node, dict):
            if TARGET not in node:
                raise ConfigError(group, None, f"a {group} config needs a schema (defaults: "
                                  f"[base_<choice>]) or `{TARGET}`: your own "
                                  f"{'Flax module class' if group == 'model' else 'function'}")
            setattr(obj, group, target_config(group, node))
    for key, metric, allowed in (
            ("objective.metric", obj.objective.metric, obj.task.objectives()),
            ("train.early_stopping.monitor", obj.train.early_stopping.monitor, obj.task.metrics())):
        if metric not in allowed:
            raise ConfigError(key, metric, f"is not a metric of task={obj.task.name}: one of "
                              f"{', '.join(allowed)}")
    name = obj.objective.metric.split("/", 1)[-1]
    mode = HOST_METRIC_MODES.get(obj.task.name, {}).get(name, EPOCH_METRIC_MODES.get(name))
    if mode is not None and mode != obj.objective.mode:
        raise ConfigError("objective.mode", obj.objective.mode,
                          f"{obj.objective.metric} is better when "
                          f"{'higher' if mode == 'max' else 'lower'}: set objective.mode={mode}")
    unknown = _unknown_keys(cfg, obj)
    if unknown:
        raise ConfigError(unknown[0], OmegaConf.select(cfg, unknown[0]),
                          "unknown key (added with '+'?): `hpjax --cfg job` lists the keys")
    return obj
