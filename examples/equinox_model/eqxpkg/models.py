"""An MLP written in Equinox for hpjax: its dropout rate and activation may be traced."""

from typing import Optional

import equinox as eqx
import jax

import hpjax.nn
import hpjax.nn.eqx


class MLP(eqx.Module):
    """`depth` hidden layers (linear, optional batch norm, activation, dropout), then one logit
    per class; called on one example, as Equinox modules are (hpjax vmaps it over a batch)."""

    hidden: list
    norms: list
    drop: hpjax.nn.eqx.Dropout
    out: eqx.nn.Linear
    activation: jax.Array | int  # the activation group's index, filled by hpjax (traced)

    def __init__(self, in_features: int, features: int = 64, depth: int = 2,
                 num_classes: int = 10, dropout: float = 0.0, batch_norm: bool = False,
                 activation: int = 0, *, key: jax.Array) -> None:
        keys = jax.random.split(key, depth + 1)
        sizes = [in_features] + [features] * depth
        self.hidden = [eqx.nn.Linear(a, b, key=k)
                       for a, b, k in zip(sizes, sizes[1:], keys, strict=False)]
        # batch statistics over the examples of a batch: hpjax vmaps them on axis "batch"
        self.norms = [eqx.nn.BatchNorm(features, axis_name="batch", mode="batch")
                      if batch_norm else None for _ in range(depth)]
        # `dropout` is in `_traced_`: a traced scalar, held out of the optimizer by hpjax
        self.drop = hpjax.nn.eqx.Dropout(dropout)
        self.out = eqx.nn.Linear(features, num_classes, key=keys[-1])
        self.activation = activation

    def __call__(self, x: jax.Array, state: Optional[eqx.nn.State] = None, *,
                 key: Optional[jax.Array] = None):
        x = x.reshape(-1)
        keys = [None] * len(self.hidden) if key is None else list(
            jax.random.split(key, len(self.hidden)))
        for linear, norm, k in zip(self.hidden, self.norms, keys, strict=True):
            x = linear(x)
            if norm is not None:
                x, state = norm(x, state)
            x = self.drop(hpjax.nn.activation(x, self.activation), key=k)
        x = self.out(x)
        return x if state is None else (x, state)
