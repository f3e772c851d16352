"""Pieces for your own Flax module whose numbers hpjax traces (`model._traced_`).

A constructor argument listed in `_traced_` reaches your module as a traced JAX scalar, one per
member of a population, so it must not steer Python control flow. `flax.linen.Dropout` does
(`if rate == 0`) and refuses a tracer; `hpjax.nn.Dropout` has its constructor and call and takes
a traced rate. A module with a field `activation` (and `negative_slope`) that its config leaves
unset receives the `activation` group's choice as a traced index for `hpjax.nn.activation`.

Examples:
  >>> import flax.linen as nn
  >>> import hpjax.nn
  >>> class MLP(nn.Module):
  ...     features: int
  ...     num_classes: int
  ...     dropout: float = 0.0  # listed in _traced_: a traced scalar inside hpjax
  ...     activation: int = 0  # filled by hpjax from the activation group
  ...     @nn.compact
  ...     def __call__(self, x, train: bool = False):
  ...         x = hpjax.nn.activation(nn.Dense(self.features)(x), self.activation)
  ...         x = hpjax.nn.Dropout(self.dropout)(x, deterministic=not train)
  ...         return nn.Dense(self.num_classes)(x)
"""

from collections.abc import Sequence
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpjax.config import ACTIVATIONS
from hpjax.model import activate


def activation(x: jax.Array, index: jax.Array | int,
               negative_slope: jax.Array | float = 0.01) -> jax.Array:
    """Applies `hpjax.config.ACTIVATIONS[index]` (relu, gelu, silu, elu, leaky_relu, tanh,
    sigmoid, softplus); a traced index switches between them inside one program."""
    return activate(x, index, jnp.asarray(negative_slope, jnp.float32))


def activation_index(name: str) -> int:
    """The index of an activation's name, for a module used outside hpjax."""
    return ACTIVATIONS.index({"swish": "silu"}.get(name, name))


class Dropout(nn.Module):
    """`flax.linen.Dropout` whose `rate` may be a traced scalar.

    Kept units are scaled by 1 / (1 - rate), so the expected output is the input; a rate of 1
    drops every unit.
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: Optional[bool] = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: Optional[bool] = None,
                 rng: Optional[jax.Array] = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic:
            return inputs
        keep = 1.0 - jnp.asarray(self.rate, jnp.float32)
        shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            shape[dim] = 1
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        mask = jax.random.uniform(rng, shape) < keep
        mask = jnp.broadcast_to(mask, inputs.shape)
        return jnp.where(mask, inputs / jnp.maximum(keep, 1e-12), 0.0).astype(inputs.dtype)
