"""hpjax's own Flax models, written as a user's `_target_` module is: constructor arguments
(the static keys of `conf/model/*.yaml`, the traced `dropout`, the `activation` group's index)
and `__call__(x, train)`. `hpjax.config.MLPConfig.spec` names them and `hpjax.engine.model.build`
builds them: the one path every model takes into the compiled program."""

from collections.abc import Callable

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
