"""Config schemas: one dataclass per choice of each config group, stored as `base_*`.

Every YAML file under `conf/<group>/` extends one of these schemas (`defaults: [base_adam]`), so
Hydra rejects unknown keys and wrong types on merge. Value checks live in `__post_init__` and run
once, when `to_config` turns the composed DictConfig into these objects. Each field is traced,
per member, or static (see `hpjax.config._schema` and `hpjax.engine.hparams`).
"""

from hpjax.config._schema import (
    ConfigError,
    Schema,
    choices,
    groups,
    is_per_member,
    is_traced,
    per_member,
    traced,
)
from hpjax.config.data import (
    SKLEARN_DATASETS,
    ArrayRecordDataConfig,
    CsvDataConfig,
    DataConfig,
    MakeRegressionDataConfig,
    Mnist1dDataConfig,
    NpyDataConfig,
    NpzDataConfig,
    SklearnDataConfig,
    SyntheticDataConfig,
)
from hpjax.config.model import (
    ACTIVATION_ALIASES,
    ACTIVATIONS,
    NORMS,
    ActivationConfig,
    CNN1DConfig,
    CNNConfig,
    MLPConfig,
    ModelConfig,
)
from hpjax.config.optim import (
    AdagradConfig,
    AdamConfig,
    AdamWConfig,
    ConstantScheduleConfig,
    CosineScheduleConfig,
    ExponentialScheduleConfig,
    LambConfig,
    LionConfig,
    MomentumConfig,
    OneCycleScheduleConfig,
    OptimizerConfig,
    RMSPropConfig,
    ScheduleConfig,
    SGDConfig,
    StepScheduleConfig,
    WarmupCosineScheduleConfig,
)
from hpjax.config.run import (
    METRICS,
    MODES,
    Config,
    EarlyStoppingConfig,
    ObjectiveConfig,
    TrainConfig,
    register_configs,
    to_config,
)
from hpjax.config.task import ClassificationTaskConfig, RegressionTaskConfig, TaskConfig

__all__ = [
    "ACTIVATIONS", "ACTIVATION_ALIASES", "METRICS", "MODES", "NORMS", "SKLEARN_DATASETS",
    "ActivationConfig", "AdagradConfig", "ArrayRecordDataConfig", "AdamConfig", "AdamWConfig",
    "CNN1DConfig", "CNNConfig",
    "Config",
    "ConfigError", "ConstantScheduleConfig", "CosineScheduleConfig", "CsvDataConfig",
    "DataConfig", "EarlyStoppingConfig", "ExponentialScheduleConfig", "LambConfig", "LionConfig",
    "MLPConfig", "MakeRegressionDataConfig", "Mnist1dDataConfig", "ModelConfig",
    "MomentumConfig", "NpyDataConfig", "NpzDataConfig",
    "ObjectiveConfig",
    "OneCycleScheduleConfig", "OptimizerConfig", "RMSPropConfig", "SGDConfig", "Schema",
    "ScheduleConfig", "SklearnDataConfig", "StepScheduleConfig", "SyntheticDataConfig",
    "TrainConfig", "TaskConfig", "ClassificationTaskConfig", "RegressionTaskConfig",
    "WarmupCosineScheduleConfig", "choices", "groups", "is_per_member",
    "is_traced", "per_member", "register_configs", "to_config", "traced",
]
