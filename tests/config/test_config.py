"""Composition, overrides and the checks that run once, before anything compiles."""

import pytest
from hydra.errors import ConfigCompositionException

from helpers import compose_config
from hpjax.config import (
    ACTIVATIONS,
    AdamWConfig,
    ConfigError,
    MLPConfig,
    MomentumConfig,
    SklearnDataConfig,
)


def test_defaults_compose_to_typed_configs():
    cfg = compose_config()
    assert isinstance(cfg.data, SklearnDataConfig) and cfg.data.name == "digits"
    assert isinstance(cfg.model, MLPConfig) and cfg.model.widths == (128, 128)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.schedule.name) == ("adam", 1e-3, "cosine")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.seed) == (30, 64, 0)
    assert (cfg.objective.metric, cfg.objective.mode) == ("val/accuracy", "max")


def test_group_choice_and_value_overrides_compose():
    cfg = compose_config(["optimizer=adamw", "optimizer.lr=3e-4", "activation=tanh",
                          "model.width=[64,32,16]"])
    assert isinstance(cfg.optimizer, AdamWConfig)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (3e-4, 1e-4)
    assert cfg.activation.name == "tanh" and cfg.model.widths == (64, 32, 16)
    nesterov = compose_config(["optimizer=nesterov"]).optimizer
    assert isinstance(nesterov, MomentumConfig) and nesterov.nesterov is True


def test_every_activation_choice_maps_to_an_index():
    for name in ACTIVATIONS + ("swish",):
        cfg = compose_config([f"activation={name}"])
        assert ACTIVATIONS[cfg.activation.index] == ("silu" if name == "swish" else name)


def test_schema_rejects_unknown_key_and_wrong_type():
    with pytest.raises(ConfigCompositionException) as e:
        compose_config(["optimizer.lrr=1"])
    assert "Key 'lrr' not in 'AdamConfig'" in str(e.value.__cause__)
    with pytest.raises(ConfigCompositionException) as e:
        compose_config(["train.epochs=abc"])
    assert "Value 'abc' of type 'str' could not be converted to Integer" in str(e.value.__cause__)
    with pytest.raises(ConfigCompositionException):
        compose_config(["activation=foo"])


# (override, exact error line)
BAD_VALUES = [
    ("optimizer.lr=-1", "optimizer.lr=-1.0: must be a finite number > 0"),
    ("optimizer.lr=0", "optimizer.lr=0.0: must be a finite number > 0"),
    ("optimizer.lr=nan", "optimizer.lr=nan: must be a finite number > 0"),
    ("model.dropout=1.0", "model.dropout=1.0: must be in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout=-0.1: must be in [0, 1)"),
    ("train.batch_size=0",
     "train.batch_size=0: must be an integer between 1 and the training-set size"),
    ("train.epochs=0", "train.epochs=0: must be an integer >= 1"),
    ("model.width=[64,0]",
     "model.width=[64,0]: must be an integer >= 1 or a non-empty list of them"),
    ("optimizer.clip_norm=-1", "optimizer.clip_norm=-1.0: must be a finite number > 0"),
    ("train.early_stopping.monitor=val/acc",
     "train.early_stopping.monitor='val/acc': must be one of val/loss, val/accuracy, "
     "train/loss, train/accuracy, val/mse, val/mae, val/r2, train/mae"),
    ("objective.mode=maximize", "objective.mode='maximize': must be one of min, max"),
    ("+train.foo=1",
     "train.foo=1: unknown key (added with '+'?): `hpjax --cfg job` lists the keys"),
    ("data=csv", "data.path=???: must be set, e.g. on the command line: data.path=..."),
    ("data=csv data.path=missing.csv", "data.path='missing.csv': file not found"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_names_key_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as e:
        compose_config(override.split())
    assert str(e.value) == message


@pytest.mark.parametrize("overrides, message", [
    (["train.seed=2147483648"], "train.seed=2147483648: must be an integer between -2147483648 "
                                "and 2147483647 (an int32 in the compiled program)"),
    (["train.seed=2147483647", "train.repeats=2"],
     "train.repeats=2: with train.seed=2147483647, the last seed (seed+repeats-1) must be at "
     "most 2147483647 (an int32 in the compiled program)"),
])
def test_an_integer_traced_as_int32_must_fit_one_whatever_numpy_does(overrides, message):
    """NumPy 2 raises on 2**31 cast to int32, NumPy 1 wraps it: hpjax checks the range itself."""
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    assert str(e.value) == message
    assert compose_config(["train.seed=2147483646", "train.repeats=2"]).train.seed == 2**31 - 2
