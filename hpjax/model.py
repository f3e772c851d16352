"""Flax models whose activation and dropout rate are traced inputs, not part of the program."""

import math
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpjax.config import ACTIVATIONS, CNNConfig, MLPConfig, ModelConfig


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


def dropout(x: jax.Array, rate: jax.Array, *, key: jax.Array) -> jax.Array:
    """Inverted dropout with a traced rate (flax.linen.Dropout needs a Python float).

    The mask compares one random byte per unit with the keep probability rounded to a multiple
    of 1/256 (rate 0.1 drops 26/256 = 10.16% of units; 0, 0.25, 0.5 are exact), and the kept
    units are scaled by that realised probability, so the expected output is the input. Four
    units share one 32-bit draw of the PRNG: drawing one float per unit
    (`jax.random.bernoulli`) made dropout 40% of a training step on CPU, this 15%.
    """
    threshold = jnp.round((1.0 - rate) * 256.0)  # units kept: byte < threshold
    n = math.prod(x.shape)
    words = jax.random.bits(key, (-(-n // 4),), jnp.uint32)
    shifts = jnp.array([[0, 8, 16, 24]], jnp.uint32)
    byte = ((words[:, None] >> shifts) & jnp.uint32(0xFF)).reshape(-1)[:n].reshape(x.shape)
    return jnp.where(byte.astype(jnp.float32) < threshold,
                     x * (256.0 / jnp.maximum(threshold, 1.0)), 0.0)


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

    @nn.compact
    def __call__(self, x: jax.Array, hp: Mapping[str, jax.Array], *, train: bool) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for width in self.widths:
            x = _norm(self.norm)(nn.Dense(width)(x))
            x = activate(x, hp["activation"], hp["negative_slope"])
            if train:
                x = dropout(x, hp["dropout"], key=self.make_rng("dropout"))
        return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
    """Conv blocks (conv, norm, activation, 2x2 max pool), then one dense hidden layer."""

    channels: tuple
    kernel_size: int
    pool: bool
    width: int
    num_classes: int
    norm: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, hp: Mapping[str, jax.Array], *, train: bool) -> jax.Array:
        k = self.kernel_size
        for c in self.channels:
            x = _norm(self.norm)(nn.Conv(c, (k, k), padding="SAME")(x))
            x = activate(x, hp["activation"], hp["negative_slope"])
            if self.pool and min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = activate(nn.Dense(self.width)(x), hp["activation"], hp["negative_slope"])
        if train:
            x = dropout(x, hp["dropout"], key=self.make_rng("dropout"))
        return nn.Dense(self.num_classes)(x)


def make_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    if isinstance(cfg, MLPConfig):
        return MLP(cfg.widths, num_classes, cfg.norm)
    if isinstance(cfg, CNNConfig):
        return CNN(tuple(cfg.channels), cfg.kernel_size, cfg.pool, cfg.width, num_classes, cfg.norm)
    raise TypeError(f"no model for {type(cfg).__name__}")
