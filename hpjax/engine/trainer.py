"""The numeric core: pure functions of one member, `(spec, hp, state, batch...)`.

`spec` (a `Spec`) is everything static about a program: the model, the step counts, and the
static view of the config (`hpjax.engine.hparams.static`). `hp` is the member's traced numbers by
group (`hpjax.engine.hparams.hparams`). The optimizer's numbers (`hp["optimizer"]`,
`hp["schedule"]`) go into its state at `init_state` through `optax.inject_hyperparams`: each step
reads them from there, so the logged learning rate is the state's, and a later step may change them
without compiling. `hpjax.engine.population` vmaps and jits these functions; a single run is a
population of one.
"""

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpjax.config import Config, ConfigError
from hpjax.engine.models._base import Model

Hparams = Mapping[str, Mapping[str, jax.Array]]
_SCHEDULE = "schedule_"  # prefix of the schedule's numbers among the optimizer's hyperparams


@dataclass(frozen=True)
class Spec:
    """The static part of one program."""

    cfg: Config  # the static view: traced and per-member keys unreadable
    model: Model  # the model adapter (`model._target_`, or a built-in model's)
    input_shape: tuple
    n_train: Optional[int]  # None: an endless training split (streamed)
    activation: Optional[int] = None  # an index that fixes the activation; None: traced
    y_scale: float = 1.0  # regression: the std the targets were standardised with
    model_outputs: int = 1  # outputs per sample (classes, or regression targets)

    @property
    def regression(self) -> bool:
        return self.cfg.task.name == "regression"

    @property
    def binary(self) -> bool:
        return self.cfg.task.name == "binary"

    @property
    def batch_size(self) -> int:
        return self.cfg.train.batch_size

    @property
    def steps_per_epoch(self) -> int:
        """`train.steps_per_epoch` where set (streamed data only: `state.check_fits`), else
        one pass over the training split."""
        return self.cfg.train.steps_per_epoch or self.n_train // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.train.epochs


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    # The model's variables: {"params": trainable parameters, and any other collection such as
    # "batch_stats"}; the optimizer updates "params", the model's train pass the others
    params: Any
    opt_state: Any  # optax.InjectStatefulHyperparamsState: the optimizer's numbers live here
    dropout_key: jax.Array
    data_key: jax.Array


def member_keys(seed: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A member's (init, dropout, data-order) PRNG keys: all its randomness comes from its seed."""
    init_key, dropout_key, data_key = jax.random.split(jax.random.key(seed), 3)
    return init_key, dropout_key, data_key


def outputs(cfg: Config, num_classes: int) -> int:
    """The model's outputs per sample: one per class (or regression target); one logit for
    task=binary.

    Raises:
      ConfigError: task=binary on data of other than two classes.
    """
    if cfg.task.name != "binary":
        return num_classes
    if num_classes != 2:
        raise ConfigError("task", "binary", f"needs data of two classes; {cfg.data.name} has "
                          f"{num_classes}: use task=classification")
    return 1


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: jax.Array | float = 0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def task_loss(spec: Spec, hp: Hparams, out: jax.Array, y: jax.Array,
              smoothing: jax.Array | float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Per sample: the task's loss and its second training metric (correct, or the mean
    absolute error in standardised units)."""
    if spec.regression:
        y = y.reshape(out.shape)
        if spec.cfg.task.loss == "huber":
            loss = optax.huber_loss(out, y, delta=hp["task"]["huber_delta"]).mean(-1)
        else:
            loss = optax.squared_error(out, y).mean(-1)
        return loss, jnp.abs(out - y).mean(-1)
    if spec.binary:
        z, positive = out[:, 0], y == 1
        target = positive * (1.0 - smoothing) + 0.5 * smoothing
        return (optax.sigmoid_binary_cross_entropy(z, target),
                ((z > 0) == positive).astype(jnp.float32))
    return cross_entropy(out, y, smoothing), (jnp.argmax(out, -1) == y).astype(jnp.float32)


def _schedule(spec: Spec, numbers: Mapping[str, Any]) -> optax.Schedule:
    own = {k[len(_SCHEDULE):]: v for k, v in numbers.items() if k.startswith(_SCHEDULE)}
    return spec.cfg.schedule.schedule(numbers["lr"], own, steps_per_epoch=spec.steps_per_epoch,
                                      total_steps=spec.total_steps)


def optimizer(spec: Spec, hp: Hparams) -> optax.GradientTransformation:
    """The schedule and optimizer of `spec`, their numbers held in the optimizer state.

    `hp` gives the numbers `init` stores; `update` reads them from the state it is given.
    """
    numbers = {**hp["optimizer"], **{_SCHEDULE + k: v for k, v in hp.get("schedule", {}).items()}}

    def factory(**n: Any) -> optax.GradientTransformation:
        own = {k: v for k, v in n.items() if not k.startswith(_SCHEDULE)}
        return spec.cfg.optimizer.optimizer(_schedule(spec, n), own)

    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in numbers])
    return optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)(**numbers)


def learning_rate(spec: Spec, opt_state: Any) -> jax.Array:
    """The learning rate of the last step, read from the optimizer state."""
    return _schedule(spec, opt_state.hyperparams)(opt_state.count - 1)


def _model_hp(spec: Spec, hp: Hparams) -> dict:
    """The module's traced constructor arguments: `model._traced_` and the activation."""
    act = hp["activation"]
    return {"activation": act["name"] if spec.activation is None else spec.activation,
            "negative_slope": act["negative_slope"], **hp.get("model", {})}


def shaping_hp(spec: Spec) -> dict:
    """Numbers of the right structure for a pass that only shapes things."""
    return {"activation": {"name": np.int32(0), "negative_slope": np.float32(0.01)},
            "model": {k: np.float32(0.0) for k in spec.model.traced}}


def init_params(spec: Spec, seed: jax.Array, hp: Optional[Hparams] = None) -> Any:
    """A member's initial variables (`TrainState.params`): the model is built with the
    member's `model._traced_` numbers (`hp`; None: zeros), which its parameters may depend on,
    and the first activation as a Python int (parameters do not depend on the activation; a
    traced one would compile every branch of its switch into the initialisation)."""
    dummy = jnp.zeros((1, *spec.input_shape), jnp.float32)
    key = member_keys(seed)[0]
    model_hp = _model_hp(spec, hp if hp is not None else shaping_hp(spec))
    return spec.model.init({**model_hp, "activation": spec.activation or 0}, key, dummy)


def forward(spec: Spec, hp: Hparams, variables: Any, x: jax.Array,
            step_noise: Any = None) -> tuple[jax.Array, dict]:
    """(the model's outputs, its updated collections other than params); `step_noise`: a
    training step's dropout key (`noise`), None evaluates."""
    return spec.model.apply(_model_hp(spec, hp), variables, x, step_noise)


def intermediates(spec: Spec, variables: Any, x: jax.Array) -> tuple:
    """(outputs, every layer's output) of an evaluation pass with shaping numbers."""
    return spec.model.intermediates(_model_hp(spec, shaping_hp(spec)), variables, x)


def init_state(spec: Spec, hp: Hparams, params: Any) -> TrainState:
    _, dropout_key, data_key = member_keys(hp["train"]["seed"])
    opt_state = optimizer(spec, hp).init(params["params"])
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, dropout_key, data_key)


def noise(spec: Spec, dropout_key: jax.Array, step: jax.Array) -> jax.Array:
    """The randomness of the dropout layers at optimizer step `step`: the module's
    `rngs={"dropout": key}`."""
    return jax.random.fold_in(dropout_key, step)


def check_model(spec: Spec, num_classes: int, values: Optional[dict] = None) -> None:
    """A `_target_` module's checks, by abstract evaluation (nothing compiles): no traced value
    steers Python control flow, and the outputs have one logit per class. `values`: a member's
    traced constructor arguments as Python numbers (default zeros).

    Raises:
      ConfigError: naming the key to leave out of `model._traced_`, or the output's shape.
    """
    model = spec.model
    if model.trusted:
        return
    x = jax.ShapeDtypeStruct((spec.batch_size, *spec.input_shape), jnp.float32)
    hp = shaping_hp(spec)
    hp["activation"]["name"] = 0 if spec.activation is None else spec.activation
    model_hp = {**_model_hp(spec, hp), **(values or {})}

    def run(numbers: dict) -> jax.Array:
        numbers = {**model_hp, **numbers}
        key = jax.random.key(0)
        variables = model.init(numbers, key, jnp.zeros(x.shape))
        return model.apply(numbers, variables, jnp.zeros(x.shape), key)[0]

    traced = {k: jax.ShapeDtypeStruct((), jnp.int32 if k == "activation" else jnp.float32)
              for k in (*model.traced, *model.fill)}
    try:
        out = jax.eval_shape(run, traced)
    except Exception:
        jax.eval_shape(run, {})  # fails with every number concrete too: the module's own error
        for key in traced:  # else the traced number that the module cannot take
            try:
                jax.eval_shape(run, {key: traced[key]})
            except Exception:
                if key in model.traced:
                    raise ConfigError("model._traced_", key, f"{model.target} uses it in Python "
                                      "control flow (if, range, a shape), which a traced value "
                                      "cannot steer: leave it out of model._traced_ (a dropout "
                                      "rate: use hpjax.nn.Dropout, hpjax.nn.nnx.Dropout or "
                                      "hpjax.nn.eqx.Dropout)") from None
                raise ConfigError(f"model.{key}", None, f"{model.target} uses it in Python "
                                  "control flow, which hpjax's traced activation cannot steer: "
                                  f"set model.{key} in the config (static)") from None
        raise
    if out.shape != (spec.batch_size, num_classes):
        raise ConfigError("model._target_", model.target,
                          f"returns outputs of shape {tuple(out.shape)} for a batch of "
                          f"{spec.batch_size}; needs ({spec.batch_size}, {num_classes}), "
                          + ("one logit (task=binary): set its output size to 1"
                             if spec.binary else "one logit per class: set its output size, "
                             "e.g. num_classes: ${data.num_classes}"))


def batches(spec: Spec, state: TrainState, n: int) -> jax.Array:
    """The sample indices of the state's epoch: [steps_per_epoch, batch_size], shuffled."""
    epoch = state.step // spec.steps_per_epoch
    order = jax.random.permutation(jax.random.fold_in(state.data_key, epoch), n)
    return order[: spec.steps_per_epoch * spec.batch_size].reshape(spec.steps_per_epoch,
                                                                   spec.batch_size)


def train_step(spec: Spec, hp: Hparams, x: jax.Array, y: jax.Array, state: TrainState,
               idx: jax.Array, step_noise: tuple) -> tuple[TrainState, tuple]:
    """One optimizer step on the samples `idx`; returns the state and (loss, accuracy or mean
    absolute error)."""
    xb, yb = x[idx], y[idx]

    def loss_fn(params: Any) -> tuple:
        out, collections = forward(spec, hp, {**state.params, "params": params}, xb, step_noise)
        loss, aux = task_loss(spec, hp, out, yb, hp["train"]["label_smoothing"])
        return loss.mean(), (aux.mean(), collections)

    trainable = state.params["params"]
    (loss, (aux, collections)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, opt_state = optimizer(spec, hp).update(grads, state.opt_state, trainable)
    variables = {**state.params, **collections, "params": optax.apply_updates(trainable, updates)}
    state = state.replace(step=state.step + 1, params=variables, opt_state=opt_state)
    return state, (loss, aux)


def epoch_metrics(spec: Spec, state: TrainState, loss: jax.Array, aux: jax.Array) -> dict:
    """An epoch's metrics from its steps' losses and accuracies (regression: mean absolute
    errors, reported in the targets' units)."""
    second = {"train/mae": aux.mean() * spec.y_scale} if spec.regression else {
        "train/accuracy": aux.mean()}
    return {"train/loss": loss.mean(), **second,
            "lr": learning_rate(spec, state.opt_state), "finite": jnp.all(jnp.isfinite(loss))}


def predict(spec: Spec, params: Any, hp: Hparams, x: jax.Array) -> jax.Array:
    """The model's outputs for every sample of `x` (logits, or standardised regression
    targets), in fixed-size batches (`train.eval_batch_size`)."""
    n = x.shape[0]
    ebs = min(spec.cfg.train.eval_batch_size, n)
    nb = -(-n // ebs)
    xs = jnp.pad(x, [(0, nb * ebs - n)] + [(0, 0)] * (x.ndim - 1)).reshape(nb, ebs, *x.shape[1:])
    out = jax.lax.map(lambda xb: forward(spec, hp, params, xb)[0], xs)
    return out.reshape(nb * ebs, *out.shape[2:])[:n]


def evaluate(spec: Spec, params: Any, hp: Hparams, x: jax.Array, y: jax.Array,
             n: Optional[jax.Array] = None) -> dict:
    """Mean loss and accuracy over the first `n` samples of `x` (default all; regression: loss,
    mse, mae, r2), in fixed-size batches (`train.eval_batch_size`). A traced `n` lets splits
    padded to one length share a program."""
    rows = x.shape[0]
    n = rows if n is None else n
    ebs = min(spec.cfg.train.eval_batch_size, rows)
    nb = -(-rows // ebs)
    pad = nb * ebs - rows
    xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(nb, ebs, *x.shape[1:])
    ys = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1)).reshape(nb, ebs, *y.shape[1:])
    ws = (jnp.arange(nb * ebs) < n).reshape(nb, ebs)

    def batch(totals: tuple, xyw: tuple) -> tuple:
        xb, yb, wb = xyw
        out = forward(spec, hp, params, xb)[0]
        loss, aux = task_loss(spec, hp, out, yb)
        sums = [jnp.sum(loss * wb), jnp.sum(aux * wb)]
        if spec.regression:  # per target: squared errors, targets, squared targets
            w = wb[:, None].astype(out.dtype)
            yb = yb.reshape(out.shape)
            sums += [jnp.sum((out - yb) ** 2 * w, 0), jnp.sum(yb * w, 0),
                     jnp.sum(yb ** 2 * w, 0)]
        return tuple(t + v for t, v in zip(totals, sums, strict=True)), None

    k = spec.model_outputs
    zeros = (jnp.float32(0), jnp.float32(0)) + ((jnp.zeros(k),) * 3 if spec.regression else ())
    totals, _ = jax.lax.scan(batch, zeros, (xs, ys, ws))
    if not spec.regression:
        return {"loss": totals[0] / n, "accuracy": totals[1] / n}
    sse, sy, syy = totals[2:]
    r2 = jnp.mean(1.0 - sse / jnp.maximum(syy - sy ** 2 / n, 1e-12))
    return {"loss": totals[0] / n, "mse": jnp.mean(sse) / n * spec.y_scale ** 2,
            "mae": totals[1] / n * spec.y_scale, "r2": r2}
