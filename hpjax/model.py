"""hpjax's own Flax models, written as a user's `_target_` module is: constructor arguments
(the static keys of `conf/model/*.yaml`, the traced `dropout`, the `activation` group's index)
and `__call__(x, train)`. `hpjax.config.MLPConfig.module` builds them through `TargetModel`,
the one path every model takes into the compiled program."""

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax

from hpjax.nn import Dropout, activation


def _norm(kind: str) -> Callable:
    if kind == "layer":
        return nn.LayerNorm()
    if kind == "rms":
        return nn.RMSNorm()
    return lambda x: x


class MLP(nn.Module):
    """Dense hidden layers (dense, norm, activation, dropout), then one logit per class."""

    widths: tuple
    num_classes: int
    norm: str = "none"
    dropout: float = 0.0  # traced
    activation: int = 0  # the activation group's index, traced
    negative_slope: float = 0.01  # traced

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for width in self.widths:
            x = _norm(self.norm)(nn.Dense(width)(x))
            x = activation(x, self.activation, self.negative_slope)
            x = Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
    """Conv blocks (conv, norm, activation, 2x2 max pool; on 1-D signals 1-D convs and pools of
    2), then one dense hidden layer with dropout."""

    channels: tuple
    kernel_size: int
    pool: bool
    width: int
    num_classes: int
    norm: str = "none"
    dropout: float = 0.0  # traced
    activation: int = 0  # traced
    negative_slope: float = 0.01  # traced

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dims = x.ndim - 2  # 2: images (height, width, channels); 1: signals (length, channels)
        k = (self.kernel_size,) * dims
        for c in self.channels:
            x = _norm(self.norm)(nn.Conv(c, k, padding="SAME")(x))
            x = activation(x, self.activation, self.negative_slope)
            if self.pool and min(x.shape[1:-1]) >= 2:
                x = nn.max_pool(x, (2,) * dims, strides=(2,) * dims)
        x = x.reshape(x.shape[0], -1)
        x = activation(nn.Dense(self.width)(x), self.activation, self.negative_slope)
        x = Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(self.num_classes)(x)


class TargetModel:
    """A flax.linen Module class (`model._target_`, or a built-in model's), built inside the
    program for each member: the static constructor arguments are fixed, the traced ones
    (`model._traced_`) and the activation fields hpjax fills (`fill`) come from the member's
    numbers. `trusted`: hpjax's own modules, which skip the checks of a user's
    (`hpjax.trainer.check_model`)."""

    def __init__(self, cls: type, static: Mapping, traced: tuple, fill: tuple,
                 target: str, trusted: bool = False) -> None:
        self.cls, self.static, self.traced, self.fill, self.target = (cls, dict(static), traced,
                                                                      fill, target)
        self.trusted = trusted

    def build(self, model_hp: Mapping[str, jax.Array]) -> nn.Module:
        return self.cls(**self.static, **{k: model_hp[k] for k in (*self.traced, *self.fill)})

    def __repr__(self) -> str:
        return f"TargetModel({self.target}, static={self.static}, traced={self.traced})"
