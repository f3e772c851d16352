"""An MLP written in Flax NNX for hpjax: its dropout rate and activation may be traced."""

import jax
from flax import nnx

import hpjax.nn
import hpjax.nn.nnx


class MLP(nnx.Module):
    """`depth` hidden layers (linear, optional batch norm, activation, dropout), then one logit
    per class. NNX makes its variables here, eagerly: the input size is an argument."""

    def __init__(self, in_features: int, features: int = 64, depth: int = 2,
                 num_classes: int = 10, dropout: float = 0.0, batch_norm: bool = False,
                 activation: int = 0, *, rngs: nnx.Rngs) -> None:
        sizes = [in_features] + [features] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs)
                                for a, b in zip(sizes, sizes[1:], strict=False)])
        self.norms = nnx.List([nnx.BatchNorm(features, rngs=rngs) if batch_norm else None
                               for _ in range(depth)])
        # `dropout` is in `_traced_`: a traced scalar, so hpjax's Dropout (not nnx.Dropout)
        self.drop = hpjax.nn.nnx.Dropout(dropout, rngs=rngs)
        # left out of the config: hpjax passes the activation group's index (traced, or a
        # Python int when the whole population shares one), kept in an nnx.Variable
        self.activation = nnx.Variable(activation)
        self.out = nnx.Linear(features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for linear, norm in zip(self.hidden, self.norms, strict=True):
            x = linear(x)
            if norm is not None:
                x = norm(x)
            x = self.drop(hpjax.nn.activation(x, self.activation.get_value()))
        return self.out(x)
