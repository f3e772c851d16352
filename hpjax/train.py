"""The numeric core of one trial: pure init, train-step, epoch and evaluation functions.

How a config becomes compiled code: `hparams(cfg)` gathers the traced numbers of a trial into one
pytree `hp`; `signature(cfg)` is everything else. `build_fns(...)` returns, for one signature,
`init(hp)`, `train_epoch(state, hp, x, y)` (shuffle with a PRNG key, then `lax.scan` over every
batch) and `evaluate(params, hp, x, y)` (`lax.scan` over fixed-size batches). All take `hp` as an
argument; `hpjax.engine` vmaps them over a population of trials and jits them once per signature
(its epoch is `train_epoch` with the steps' dropout noise drawn once per distinct seed).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from hpjax.config import Config
from hpjax.model import dropout_noise, make_model
from hpjax.optim import make_optimizer, make_schedule

Hparams = dict[str, jax.Array]


# ---------------------------------------------------------------------------------------------
# Compile accounting: JAX reports every trace, lowering and XLA compile through jax.monitoring.
# ---------------------------------------------------------------------------------------------
class CompileStats:
    """Running totals of XLA compilations in this process (`count`) and time spent compiling."""

    _EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
               "/jax/core/compile/jaxpr_to_mlir_module_duration",
               "/jax/core/compile/backend_compile_duration")
    count = 0
    seconds = 0.0
    cache_hits = 0  # programs loaded from the persistent compilation cache instead

    @classmethod
    def _listen(cls, event: str, duration: float, **_: Any) -> None:
        if event in cls._EVENTS:
            cls.seconds += duration
            cls.count += event == cls._EVENTS[-1]

    @classmethod
    def _count_hit(cls, event: str, **_: Any) -> None:
        cls.cache_hits += event == "/jax/compilation_cache/cache_hits"


jax.monitoring.register_event_duration_secs_listener(CompileStats._listen)
jax.monitoring.register_event_listener(CompileStats._count_hit)

DEFAULT_CACHE = "~/.cache/hpjax/jax"


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
    """Turns on JAX's persistent compilation cache, so a new process reuses compiled programs.

    Args:
      path: the cache folder; default `$HPJAX_COMPILATION_CACHE`, else `~/.cache/hpjax/jax`.
        `off` (or `0`, empty) leaves the cache off.
    Returns:
      The folder in use, or None when off.
    """
    path = path if path is not None else os.environ.get("HPJAX_COMPILATION_CACHE", DEFAULT_CACHE)
    if path.strip().lower() in ("", "0", "off", "false", "none"):
        return None
    path = os.path.abspath(os.path.expanduser(path))
    jax.config.update("jax_compilation_cache_dir", path)
    # Cache every program that took a fifth of a second to compile; tinier ones are cheap.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


# ---------------------------------------------------------------------------------------------
# The compiled programs
# ---------------------------------------------------------------------------------------------
@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    dropout_key: jax.Array
    data_key: jax.Array


@dataclass(frozen=True)
class Fns:
    """Pure, unjitted functions of one trial."""

    init: Callable  # (hp, params=init_params(hp["seed"])) -> TrainState
    init_params: Callable  # (seed) -> params
    # (hp, x, y, state, batch_indices, noise) -> (state, (loss, accuracy))
    train_step: Callable
    train_epoch: Callable  # (state, hp, x, y) -> (state, metrics)
    evaluate: Callable  # (params, hp, x, y) -> {"loss", "accuracy"}
    batches: Callable  # (state, n) -> [steps_per_epoch, batch_size] sample indices of the epoch
    noise: Callable  # (dropout_key, step) -> the dropout layers' random words of that step
    epoch_metrics: Callable  # (state, hp, losses, accuracies) -> an epoch's metrics
    steps_per_epoch: int


def member_keys(seed: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A trial's (init, dropout, data-order) PRNG keys: all its randomness comes from its seed."""
    init_key, dropout_key, data_key = jax.random.split(jax.random.key(seed), 3)
    return init_key, dropout_key, data_key


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: jax.Array | float = 0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def build_fns(cfg: Config, *, num_classes: int, input_shape: tuple, n_train: int,
              activation: Optional[int] = None) -> Fns:
    """The functions for every config with `cfg`'s signature (its traced values are unused).

    `activation`, an index into `ACTIVATIONS`, fixes the activation in the program instead of
    reading it from `hp` (for a population whose members all use the same one).
    """
    model = make_model(cfg.model, num_classes)

    def model_hp(hp: Hparams) -> Hparams:
        return hp if activation is None else {**hp, "activation": activation}

    bs = cfg.train.batch_size
    steps_per_epoch = n_train // bs
    total_steps = steps_per_epoch * cfg.train.epochs

    def make_tx(hp: Hparams):
        schedule = make_schedule(cfg.schedule, hp, steps_per_epoch=steps_per_epoch,
                                 total_steps=total_steps)
        return make_optimizer(cfg.optimizer, hp, schedule), schedule

    def init_params(seed: jax.Array) -> Any:
        """A trial's initial parameters: they depend on its seed alone (the activation of the
        forward pass that shapes them does not matter)."""
        dummy = jnp.zeros((1, *input_shape), jnp.float32)
        structure = {"activation": 0, "negative_slope": jnp.float32(0.01)}
        return model.init(member_keys(seed)[0], dummy, structure)["params"]

    def init(hp: Hparams, params: Any = None) -> TrainState:
        _, dropout_key, data_key = member_keys(hp["seed"])
        params = init_params(hp["seed"]) if params is None else params
        tx, _ = make_tx(hp)
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), dropout_key, data_key)

    shapes = model.dropout_shapes(bs)

    def noise(dropout_key: jax.Array, step: jax.Array) -> tuple:
        return dropout_noise(jax.random.fold_in(dropout_key, step), shapes)

    def train_step(hp, x, y, state: TrainState, idx: jax.Array, noise: tuple):
        tx, _ = make_tx(hp)
        xb, yb = x[idx], y[idx]

        def loss_fn(params):
            logits = model.apply({"params": params}, xb, model_hp(hp), noise)
            return cross_entropy(logits, yb, hp["label_smoothing"]).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return state, (loss, jnp.mean(jnp.argmax(logits, -1) == yb))

    def batches(state: TrainState, n: int) -> jax.Array:
        epoch = state.step // steps_per_epoch
        order = jax.random.permutation(jax.random.fold_in(state.data_key, epoch), n)
        return order[: steps_per_epoch * bs].reshape(steps_per_epoch, bs)

    def epoch_metrics(state: TrainState, hp: Hparams, loss: jax.Array, acc: jax.Array) -> dict:
        _, schedule = make_tx(hp)
        return {"train/loss": loss.mean(), "train/accuracy": acc.mean(),
                "lr": schedule(state.step - 1), "finite": jnp.all(jnp.isfinite(loss))}

    def train_epoch(state: TrainState, hp: Hparams, x: jax.Array, y: jax.Array):
        def step(s: TrainState, idx: jax.Array):
            return train_step(hp, x, y, s, idx, noise(s.dropout_key, s.step))

        state, (loss, acc) = jax.lax.scan(step, state, batches(state, x.shape[0]))
        return state, epoch_metrics(state, hp, loss, acc)

    def evaluate(params, hp: Hparams, x: jax.Array, y: jax.Array):
        n = x.shape[0]
        ebs = min(cfg.train.eval_batch_size, n)
        nb = -(-n // ebs)
        pad = nb * ebs - n
        xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(nb, ebs, *x.shape[1:])
        ys = jnp.pad(y, (0, pad)).reshape(nb, ebs)
        ws = (jnp.arange(nb * ebs) < n).reshape(nb, ebs)

        def batch(totals, xyw):
            xb, yb, wb = xyw
            logits = model.apply({"params": params}, xb, model_hp(hp))
            loss = jnp.sum(cross_entropy(logits, yb) * wb)
            correct = jnp.sum((jnp.argmax(logits, -1) == yb) * wb)
            return (totals[0] + loss, totals[1] + correct), None

        (loss, correct), _ = jax.lax.scan(batch, (jnp.float32(0), jnp.float32(0)), (xs, ys, ws))
        return {"loss": loss / n, "accuracy": correct / n}

    return Fns(init, init_params, train_step, train_epoch, evaluate, batches, noise,
               epoch_metrics, steps_per_epoch)
