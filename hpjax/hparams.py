"""The one rule for which config keys shape the compiled program and which enter it as numbers.

A *traced* key reaches the compiled code as a scalar array in the `hp` pytree: trials that differ
only in traced keys share one program (and the population engine stacks them along an axis).
Every other key is *static*: it goes into the program's cache key, and a new value compiles anew.

| group        | traced keys                                                           |
|--------------|-----------------------------------------------------------------------|
| optimizer    | lr, weight_decay, clip_norm (its value; null/not-null is static),     |
|              | momentum, b1, b2, eps, decay, initial_accumulator_value                |
| schedule     | gamma, decay_rate, end_ratio, init_ratio                              |
| model        | dropout                                                               |
| activation   | name (as an index into `lax.switch`), negative_slope                  |
| train        | seed, label_smoothing                                                 |

Static: the data set and its shapes, every model key but dropout, the optimizer family and its
boolean switches (nesterov, centered), the schedule family and its step fractions (boundaries,
warmup_fraction, pct_start) and onecycle's div factors, train.epochs, train.batch_size,
train.eval_batch_size (data.cv_folds too: it gives the data a fold axis). Early stopping,
train.repeats (more members), train.checkpoint_every and the objective act on the host, outside
the program.

One refinement: under vmap a traced activation computes every branch of its `lax.switch`, so a
population (more than one trial) whose members all use the same activation fixes it in the
program instead (about 20% faster on CPU); mixed activations share the switched program.
"""

import dataclasses
from typing import Any

import numpy as np

from hpjax.config import Config

TRACED: dict[str, tuple[str, ...]] = {
    "optimizer": ("lr", "weight_decay", "clip_norm", "momentum", "b1", "b2", "eps", "decay",
                  "initial_accumulator_value"),
    "schedule": ("gamma", "decay_rate", "end_ratio", "init_ratio"),
    "model": ("dropout",),
    "activation": ("name", "negative_slope"),
    "train": ("seed", "label_smoothing"),
}
# Keys renamed in `hp` where the group's name would be ambiguous or not a number.
_HP_NAME = {("activation", "name"): "activation"}
_INT_KEYS = {"activation", "seed"}
# Keys of the train group the host loop reads: not part of the program's signature either.
_HOST_ONLY = {"train": ("early_stopping", "repeats", "checkpoint_every")}


def hparams(cfg: Config) -> dict[str, np.ndarray]:
    """The traced values of one trial: a flat dict of scalar arrays, the same keys per program
    (NumPy's: a population stacks them on the host and sends each key once)."""
    hp = {}
    for group, keys in TRACED.items():
        node = getattr(cfg, group)
        for key in keys:
            if not hasattr(node, key):
                continue
            value = getattr(node, key)
            name = _HP_NAME.get((group, key), key)
            if name == "activation":
                value = node.index
            if value is None:  # clip_norm off: structure, recorded in the signature
                continue
            hp[name] = np.asarray(value, np.int32 if name in _INT_KEYS else np.float32)
    return hp


def signature(cfg: Config) -> tuple:
    """The static part of a config: equal signatures (and data shapes) share one program."""
    parts: list[Any] = [("data", repr(cfg.data))]
    for group in ("model", "activation", "optimizer", "schedule", "train"):
        node = getattr(cfg, group)
        skip = set(TRACED.get(group, ())) | set(_HOST_ONLY.get(group, ()))
        static = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)
                  if f.name not in skip}
        if group == "optimizer":
            static["clip"] = node.clip_norm is not None
        parts.append((group, type(node).__name__, repr(sorted(static.items()))))
    return tuple(parts)
