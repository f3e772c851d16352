"""Flax models whose activation and dropout rate are traced inputs, not part of the program."""

import math
from collections.abc import Callable, Mapping, Sequence
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


def activate(x: jax.Array, index: jax.Array | int, negative_slope: jax.Array) -> jax.Array:
    """Applies `ACTIVATIONS[index]`; a traced index lets one program serve every activation,
    a Python int compiles just that one (faster under vmap, where a switch computes them all)."""
    if isinstance(index, int):
        return _activation_fns(negative_slope)[index](x)
    return jax.lax.switch(index, _activation_fns(negative_slope), x)


def dropout(x: jax.Array, rate: jax.Array, words: jax.Array) -> jax.Array:
    """Inverted dropout with a traced rate (flax.linen.Dropout needs a Python float).

    `words` are `noise_words(x.shape)` random 32-bit words (see `dropout_noise`): each gives four
    units one random byte, and a unit is kept when its byte is below the keep probability rounded
    to a multiple of 1/256 (rate 0.1 drops 26/256 = 10.16% of units; 0, 0.25, 0.5 are exact).
    Kept units are scaled by that realised probability, so the expected output is the input.
    One byte per unit costs far less than one float per unit (`jax.random.bernoulli`). The
    noise is an input, not a key, so that a population's members with the same seed
    draw it once (`hpjax.population`).
    """
    threshold = jnp.round((1.0 - rate) * 256.0)  # units kept: byte < threshold
    # Reinterpreting the words as bytes (no shifts and masks per unit) lets XLA fuse the mask
    # into the activation's loop.
    n = math.prod(x.shape)
    byte = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:n].reshape(x.shape)
    return jnp.where(byte.astype(jnp.float32) < threshold,
                     x * (256.0 / jnp.maximum(threshold, 1.0)), 0.0)


def noise_words(shape: Sequence[int]) -> int:
    """How many 32-bit words the dropout of an activation of `shape` reads (one per 4 units)."""
    return -(-math.prod(shape) // 4)


def dropout_noise(key: jax.Array, shapes: Sequence[tuple]) -> tuple:
    """The random words of one training step's dropout layers, whose activations have `shapes`."""
    keys = jax.random.split(key, len(shapes))
    return tuple(jax.random.bits(k, (noise_words(s),), jnp.uint32)
                 for k, s in zip(keys, shapes, strict=True))


def _norm(kind: str) -> Callable:
    if kind == "layer":
        return nn.LayerNorm()
    if kind == "rms":
        return nn.RMSNorm()
    return lambda x: x


class MLP(nn.Module):
    widths: tuple
    num_classes: int
    norm: str = "none"

    def dropout_shapes(self, batch: int) -> list[tuple]:
        return [(batch, width) for width in self.widths]

    @nn.compact
    def __call__(self, x: jax.Array, hp: Mapping[str, jax.Array],
                 noise: Optional[Sequence[jax.Array]] = None) -> jax.Array:
        """`noise`: `dropout_noise` for `dropout_shapes(batch)` when training; None evaluates."""
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.widths):
            x = _norm(self.norm)(nn.Dense(width)(x))
            x = activate(x, hp["activation"], hp["negative_slope"])
            if noise is not None:
                x = dropout(x, hp["dropout"], noise[i])
        return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
    """Conv blocks (conv, norm, activation, 2x2 max pool; on 1-D signals 1-D convs and pools of
    2), then one dense hidden layer."""

    channels: tuple
    kernel_size: int
    pool: bool
    width: int
    num_classes: int
    norm: str = "none"

    def dropout_shapes(self, batch: int) -> list[tuple]:
        return [(batch, self.width)]

    @nn.compact
    def __call__(self, x: jax.Array, hp: Mapping[str, jax.Array],
                 noise: Optional[Sequence[jax.Array]] = None) -> jax.Array:
        dims = x.ndim - 2  # 2: images (height, width, channels); 1: signals (length, channels)
        k = (self.kernel_size,) * dims
        for c in self.channels:
            x = _norm(self.norm)(nn.Conv(c, k, padding="SAME")(x))
            x = activate(x, hp["activation"], hp["negative_slope"])
            if self.pool and min(x.shape[1:-1]) >= 2:
                x = nn.max_pool(x, (2,) * dims, strides=(2,) * dims)
        x = x.reshape(x.shape[0], -1)
        x = activate(nn.Dense(self.width)(x), hp["activation"], hp["negative_slope"])
        if noise is not None:
            x = dropout(x, hp["dropout"], noise[0])
        return nn.Dense(self.num_classes)(x)




class TargetModel:
    """A user's flax.linen Module class (`model._target_`), built inside the program for each
    member: the static constructor arguments are fixed, the traced ones (`model._traced_`) and
    the activation fields hpjax fills (`fill`) come from the member's numbers."""

    def __init__(self, cls: type, static: Mapping, traced: tuple, fill: tuple,
                 target: str) -> None:
        self.cls, self.static, self.traced, self.fill, self.target = (cls, dict(static), traced,
                                                                      fill, target)

    def build(self, model_hp: Mapping[str, jax.Array]) -> nn.Module:
        return self.cls(**self.static, **{k: model_hp[k] for k in (*self.traced, *self.fill)})

    def __repr__(self) -> str:
        return f"TargetModel({self.target}, static={self.static}, traced={self.traced})"
