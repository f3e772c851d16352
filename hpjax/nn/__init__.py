"""Pieces for your own Flax module whose numbers hpjax traces (`model._traced_`).

A constructor argument listed in `_traced_` reaches your module as a traced JAX scalar, one per
member of a population, so it must not steer Python control flow. `flax.linen.Dropout` does
(`if rate == 0`) and refuses a tracer; `hpjax.nn.Dropout` has its constructor and call and takes
a traced rate (for Flax NNX: `hpjax.nn.nnx.Dropout`; for Equinox: `hpjax.nn.eqx.Dropout`). A
module with a field `activation` (and `negative_slope`) that its config leaves unset receives
the `activation` group's choice as a traced index for `hpjax.nn.activation`.

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

import math
from collections.abc import Callable, Sequence
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpjax.config import ACTIVATIONS


def _activation_fns(negative_slope: jax.Array) -> list[Callable]:
    fns = {
        "relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "elu": jax.nn.elu,
        "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope),
        "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus,
    }
    return [fns[name] for name in ACTIVATIONS]


def activation(x: jax.Array, index: jax.Array | int,
               negative_slope: jax.Array | float = 0.01) -> jax.Array:
    """Applies `hpjax.config.ACTIVATIONS[index]` (relu, gelu, silu, elu, leaky_relu, tanh,
    sigmoid, softplus); a traced index switches between them inside one program, a Python int
    compiles just that one (faster under vmap, where a switch computes them all)."""
    fns = _activation_fns(jnp.asarray(negative_slope, jnp.float32))
    if isinstance(index, int):
        return fns[index](x)
    return jax.lax.switch(index, fns, x)


def activation_index(name: str) -> int:
    """The index of an activation's name, for a module used outside hpjax."""
    return ACTIVATIONS.index({"swish": "silu"}.get(name, name))


def noise_words(shape: Sequence[int]) -> int:
    """How many random 32-bit words the dropout of an activation of `shape` reads (one per 4
    units)."""
    return -(-math.prod(shape) // 4)


def dropout(x: jax.Array, rate: jax.Array, words: jax.Array) -> jax.Array:
    """Inverted dropout with a traced rate, from `noise_words(x.shape)` random 32-bit words.

    Each word gives four units one random byte, and a unit is kept when its byte is below the
    keep probability rounded to a multiple of 1/256 (rate 0.1 drops 26/256 = 10.16% of units; 0,
    0.25, 0.5 are exact). Kept units are scaled by that realised probability, so the expected
    output is the input. One byte per unit costs far less than one float per unit
    (`jax.random.bernoulli`).
    """
    threshold = jnp.round((1.0 - rate) * 256.0)  # units kept: byte < threshold
    # Reinterpreting the words as bytes (no shifts and masks per unit) lets XLA fuse the mask
    # into the activation's loop.
    n = math.prod(x.shape)
    byte = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:n].reshape(x.shape)
    return jnp.where(byte.astype(jnp.float32) < threshold,
                     x * (256.0 / jnp.maximum(threshold, 1.0)), 0.0).astype(x.dtype)


class Dropout(nn.Module):
    """`flax.linen.Dropout` whose `rate` may be a traced scalar (`hpjax.nn.dropout`'s masks).

    The rate is rounded to a multiple of 1/256 and kept units are scaled by the realised keep
    probability, so the expected output is the input; a rate of 1 drops every unit.
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
        shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            shape[dim] = 1
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        words = jax.random.bits(rng, (noise_words(shape),), jnp.uint32)
        rate = jnp.asarray(self.rate, jnp.float32)
        if not self.broadcast_dims:
            return dropout(inputs, rate, words)
        scale = dropout(jnp.ones(shape, inputs.dtype), rate, words)
        return inputs * jnp.broadcast_to(scale, inputs.shape)
