"""A residual MLP written for hpjax: its dropout rate and activation may be traced numbers."""

import flax.linen as nn
import jax

import hpjax.nn


class ResMLP(nn.Module):
    """Dense stem, `depth` residual blocks (dense, optional batch norm, activation, dropout),
    then one logit per class."""

    features: int = 64
    depth: int = 2
    num_classes: int = 10
    dropout: float = 0.0  # in `_traced_`: a traced scalar, so hpjax.nn.Dropout (not nn.Dropout)
    batch_norm: bool = False
    activation: int = 0  # left out of the config: hpjax passes the activation group's index

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Dense(self.features)(x.reshape(x.shape[0], -1))
        for _ in range(self.depth):
            h = nn.Dense(self.features)(x)
            if self.batch_norm:
                h = nn.BatchNorm(use_running_average=not train)(h)
            h = hpjax.nn.activation(h, self.activation)
            x = x + hpjax.nn.Dropout(self.dropout)(h, deterministic=not train)
        return nn.Dense(self.num_classes)(x)
