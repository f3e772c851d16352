"""Optax optimizers and learning-rate schedules built from traced hyperparameters.

Both builders run inside the compiled training code: `hp` holds traced scalars, so a trial that
changes only numbers reuses the program. Structural choices (the optimizer family, Nesterov,
clipping on/off, the schedule family and its step boundaries) come from the static config.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from hpjax.config import (
    ConstantScheduleConfig,
    CosineScheduleConfig,
    ExponentialScheduleConfig,
    OneCycleScheduleConfig,
    OptimizerConfig,
    ScheduleConfig,
    StepScheduleConfig,
    WarmupCosineScheduleConfig,
)

Hparams = Mapping[str, jax.Array]


def _decay_mask(params):
    # Weight decay on matrices and kernels only: biases and norm scales are left alone.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _coupled(tx: optax.GradientTransformation, hp: Hparams) -> optax.GradientTransformation:
    """L2 penalty added to the gradient, as torch.optim's `weight_decay` does for these."""
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"], _decay_mask), tx)


_BUILDERS: dict[str, Callable] = {
    "sgd": lambda cfg, hp, lr: _coupled(optax.sgd(lr), hp),
    "momentum": lambda cfg, hp, lr: _coupled(
        optax.sgd(lr, momentum=hp["momentum"], nesterov=cfg.nesterov), hp),
    "adam": lambda cfg, hp, lr: _coupled(
        optax.adam(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]), hp),
    "adamw": lambda cfg, hp, lr: optax.adamw(
        lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], weight_decay=hp["weight_decay"],
        mask=_decay_mask),
    "lamb": lambda cfg, hp, lr: optax.lamb(
        lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], weight_decay=hp["weight_decay"],
        mask=_decay_mask),
    "lion": lambda cfg, hp, lr: optax.lion(
        lr, b1=hp["b1"], b2=hp["b2"], weight_decay=hp["weight_decay"], mask=_decay_mask),
    "rmsprop": lambda cfg, hp, lr: _coupled(optax.rmsprop(
        lr, decay=hp["decay"], eps=hp["eps"], momentum=hp["momentum"], centered=cfg.centered), hp),
    "adagrad": lambda cfg, hp, lr: _coupled(optax.adagrad(
        lr, initial_accumulator_value=hp["initial_accumulator_value"], eps=hp["eps"]), hp),
}
_BUILDERS["nesterov"] = _BUILDERS["momentum"]


def make_optimizer(cfg: OptimizerConfig, hp: Hparams,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer of `cfg.name` with its numbers taken from `hp`, clipped if configured."""
    tx = _BUILDERS[cfg.name](cfg, hp, schedule)
    if cfg.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(hp["clip_norm"]), tx)
    return tx


def make_schedule(cfg: ScheduleConfig, hp: Hparams, *, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
    """The learning rate at each optimizer step, peaking at (or starting from) `hp["lr"]`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hpjax.config import CosineScheduleConfig
      >>> s = make_schedule(CosineScheduleConfig(end_ratio=0.1), {"lr": jnp.float32(1.0),
      ...                   "end_ratio": jnp.float32(0.1)}, steps_per_epoch=10, total_steps=100)
      >>> [round(float(s(t)), 3) for t in (0, 50, 100)]
      [1.0, 0.55, 0.1]
    """
    lr = hp["lr"]
    if isinstance(cfg, ConstantScheduleConfig):
        return optax.constant_schedule(lr)
    if isinstance(cfg, StepScheduleConfig):
        # optax.piecewise_constant_schedule checks its scales in Python, so join constants.
        pieces = [optax.constant_schedule(lr * hp["gamma"] ** i)
                  for i in range(len(cfg.boundaries) + 1)]
        return optax.join_schedules(pieces, [round(b * total_steps) for b in cfg.boundaries])
    if isinstance(cfg, ExponentialScheduleConfig):
        # optax.exponential_decay branches on `decay_rate == 0` in Python: it cannot be traced.
        def exponential(count):
            epochs = count / steps_per_epoch
            return lr * hp["decay_rate"] ** (jnp.floor(epochs) if cfg.staircase else epochs)
        return exponential
    if isinstance(cfg, WarmupCosineScheduleConfig):
        warmup = max(1, round(cfg.warmup_fraction * total_steps))
        return optax.join_schedules(
            [optax.linear_schedule(lr * hp["init_ratio"], lr, warmup),
             optax.cosine_decay_schedule(lr, max(1, total_steps - warmup), alpha=hp["end_ratio"])],
            [warmup])
    if isinstance(cfg, CosineScheduleConfig):
        return optax.cosine_decay_schedule(lr, total_steps, alpha=hp["end_ratio"])
    if isinstance(cfg, OneCycleScheduleConfig):
        return optax.cosine_onecycle_schedule(
            total_steps, lr, pct_start=cfg.pct_start, div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor)
    raise TypeError(f"no schedule for {type(cfg).__name__}")
