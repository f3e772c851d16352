"""Training of one configuration: pure, compiled epoch and evaluation functions, and `run(cfg)`.

How a config becomes compiled code: `hparams(cfg)` gathers the traced numbers of a trial into one
pytree `hp`; `signature(cfg)` is everything else. `programs(...)` builds, once per signature, the
jitted `init(hp)`, `train_epoch(state, hp, x, y)` (shuffle with a PRNG key, then `lax.scan` over
every batch) and `evaluate(params, hp, x, y)` (`lax.scan` over fixed-size batches). All three
take `hp` as an argument, so the next trial with new numbers reuses them without compiling.
"""

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpjax import data as data_lib
from hpjax.config import Config, ConfigError, EarlyStoppingConfig
from hpjax.hparams import hparams, signature
from hpjax.model import make_model
from hpjax.optim import make_optimizer, make_schedule

log = logging.getLogger("hpjax")

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

    @classmethod
    def _listen(cls, event: str, duration: float, **_: Any) -> None:
        if event in cls._EVENTS:
            cls.seconds += duration
            cls.count += event == cls._EVENTS[-1]


jax.monitoring.register_event_duration_secs_listener(CompileStats._listen)


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
class Programs:
    init: Callable
    train_step: Callable  # pure, not jitted: (hp, x, y, state, batch_indices) -> (state, metrics)
    train_epoch: Callable
    evaluate: Callable
    num_params: Callable
    steps_per_epoch: int


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: jax.Array | float = 0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def build_programs(cfg: Config, *, num_classes: int, input_shape: tuple,
                   n_train: int) -> Programs:
    """The jitted functions for every config with `cfg`'s signature (traced values unused)."""
    model = make_model(cfg.model, num_classes)
    bs = cfg.train.batch_size
    steps_per_epoch = n_train // bs
    total_steps = steps_per_epoch * cfg.train.epochs

    def make_tx(hp: Hparams):
        schedule = make_schedule(cfg.schedule, hp, steps_per_epoch=steps_per_epoch,
                                 total_steps=total_steps)
        return make_optimizer(cfg.optimizer, hp, schedule), schedule

    def init(hp: Hparams) -> TrainState:
        init_key, dropout_key, data_key = jax.random.split(jax.random.key(hp["seed"]), 3)
        dummy = jnp.zeros((1, *input_shape), jnp.float32)
        params = model.init(init_key, dummy, hp, train=False)["params"]
        tx, _ = make_tx(hp)
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), dropout_key, data_key)

    def train_step(hp, x, y, state: TrainState, idx: jax.Array):
        tx, _ = make_tx(hp)
        xb, yb = x[idx], y[idx]
        key = jax.random.fold_in(state.dropout_key, state.step)

        def loss_fn(params):
            logits = model.apply({"params": params}, xb, hp, train=True, rngs={"dropout": key})
            return cross_entropy(logits, yb, hp["label_smoothing"]).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return state, (loss, jnp.mean(jnp.argmax(logits, -1) == yb))

    def train_epoch(state: TrainState, hp: Hparams, x: jax.Array, y: jax.Array):
        epoch = state.step // steps_per_epoch
        order = jax.random.permutation(jax.random.fold_in(state.data_key, epoch), x.shape[0])
        batches = order[: steps_per_epoch * bs].reshape(steps_per_epoch, bs)
        step = lambda s, idx: train_step(hp, x, y, s, idx)
        state, (loss, acc) = jax.lax.scan(step, state, batches)
        _, schedule = make_tx(hp)
        metrics = {"train/loss": loss.mean(), "train/accuracy": acc.mean(),
                   "lr": schedule(state.step - 1), "finite": jnp.all(jnp.isfinite(loss))}
        return state, metrics

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
            logits = model.apply({"params": params}, xb, hp, train=False)
            loss = jnp.sum(cross_entropy(logits, yb) * wb)
            correct = jnp.sum((jnp.argmax(logits, -1) == yb) * wb)
            return (totals[0] + loss, totals[1] + correct), None

        (loss, correct), _ = jax.lax.scan(batch, (jnp.float32(0), jnp.float32(0)), (xs, ys, ws))
        return {"loss": loss / n, "accuracy": correct / n}

    def num_params(params) -> int:
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

    return Programs(jax.jit(init), train_step, jax.jit(train_epoch), jax.jit(evaluate),
                    num_params, steps_per_epoch)


_PROGRAMS: dict[tuple, Programs] = {}


def programs(cfg: Config, ds: data_lib.Dataset) -> Programs:
    """`build_programs` cached by signature, so every trial of a grid in one process shares it."""
    key = (signature(cfg), ds.input_shape, ds.num_classes, len(ds.x_train))
    if key not in _PROGRAMS:
        _PROGRAMS[key] = build_programs(cfg, num_classes=ds.num_classes,
                                        input_shape=ds.input_shape, n_train=len(ds.x_train))
    return _PROGRAMS[key]


# ---------------------------------------------------------------------------------------------
# The host loop: epochs, early stopping, divergence, files
# ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    status: str  # "ok", "diverged", or "failed" (a config error, in a sweep)
    objective: Optional[float]  # null when diverged; the task function then returns the worst
    objective_metric: str
    objective_mode: str
    best_epoch: Optional[int]
    best: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    epochs_run: int = 0
    stopped_early: bool = False
    diverged_epoch: Optional[int] = None
    compile_time_s: float = 0.0
    train_time_s: float = 0.0
    samples_per_s: float = 0.0
    num_params: int = 0
    seed: int = 0
    error: Optional[str] = None


def write_result(result: Result, output_dir: str) -> None:
    with open(os.path.join(output_dir, "result.json"), "w") as f:
        json.dump(_json_safe(asdict(result)) | {"best": _json_safe(result.best)}, f, indent=2)


def check_fits(cfg: Config, ds: data_lib.Dataset) -> None:
    """The checks that need the data: run before anything compiles."""
    n = len(ds.x_train)
    if cfg.train.batch_size > n:
        raise ConfigError("train.batch_size", cfg.train.batch_size,
                          f"must be an integer between 1 and the training-set size {n}")
    if cfg.model.name == "cnn" and len(ds.input_shape) != 3:
        raise ConfigError("model", "cnn", "needs image-shaped data: set data.image_shape="
                          "[height,width,channels] (the digits set has it)")


@dataclass
class BestEpoch:
    """Tracks the best epoch by the monitored metric and counts the patience of early stopping,
    as Keras' `EarlyStopping(restore_best_weights=True)` does."""

    cfg: EarlyStoppingConfig
    epoch: Optional[int] = None
    row: dict = field(default_factory=dict)
    params: Any = None

    def update(self, epoch: int, row: dict, params: Any) -> bool:
        """Records `epoch` if it improved on the best; returns True when training should stop."""
        value, c = row[self.cfg.monitor], self.cfg
        if self.epoch is None or (value < self.row[c.monitor] - c.min_delta if c.mode == "min"
                                  else value > self.row[c.monitor] + c.min_delta):
            self.epoch, self.row, self.params = epoch, row, params
            return False
        return c.patience is not None and epoch - self.epoch >= c.patience


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def _json_safe(metrics: dict) -> dict:
    return {k: (v if math.isfinite(v) else None) if isinstance(v, float) else v
            for k, v in metrics.items()}


def run(cfg: Config, output_dir: Optional[str] = None) -> Result:
    """Trains one configuration and, given `output_dir`, writes `metrics.jsonl` and `result.json`.

    Args:
      cfg: a validated config (`hpjax.config.to_config`).
      output_dir: the job's directory; None writes nothing.
    Returns:
      The trial's `Result`; `Result.objective` is None when training diverged.
    Raises:
      ConfigError: the data cannot be loaded or does not fit the config (before any compile).
    """
    ds = data_lib.load(cfg.data)
    check_fits(cfg, ds)
    compile_count, compile_s0 = CompileStats.count, CompileStats.seconds
    progs = programs(cfg, ds)
    hp = hparams(cfg)
    x_tr, y_tr, x_va, y_va = map(jnp.asarray, (ds.x_train, ds.y_train, ds.x_val, ds.y_val))
    samples_per_epoch = progs.steps_per_epoch * cfg.train.batch_size

    metrics_file = open(os.path.join(output_dir, "metrics.jsonl"), "w") if output_dir else None
    state = progs.init(hp)
    best = BestEpoch(cfg.train.early_stopping)
    train_s = fit_s = 0.0  # seconds in train_epoch; in train_epoch + validation (no compiles)
    status, stopped_early, diverged_epoch, epoch = "ok", False, None, 0
    try:
        for epoch in range(1, cfg.train.epochs + 1):
            c0, t0 = CompileStats.seconds, time.perf_counter()
            state, m = progs.train_epoch(state, hp, x_tr, y_tr)
            jax.block_until_ready(state)
            t1 = time.perf_counter()
            val = progs.evaluate(state.params, hp, x_va, y_va)
            m = jax.device_get(m) | {f"val/{k}": v for k, v in jax.device_get(val).items()}
            t2 = time.perf_counter()
            compiling = CompileStats.seconds - c0
            train_s += max(t1 - t0 - compiling, 0.0)
            fit_s += max(t2 - t0 - compiling, 0.0)
            finite = bool(m.pop("finite")) and math.isfinite(float(m["val/loss"]))
            row = {"epoch": epoch, **{k: float(v) for k, v in m.items()},
                   "epoch_time_s": round(max(t2 - t0 - compiling, 0.0), 6)}
            if metrics_file:
                metrics_file.write(json.dumps(_json_safe(row)) + "\n")
                metrics_file.flush()
            log.info("epoch %3d/%d  train/loss %.4f  train/acc %.4f  val/loss %.4f  val/acc %.4f"
                     "  lr %.3g", epoch, cfg.train.epochs, row["train/loss"],
                     row["train/accuracy"], row["val/loss"], row["val/accuracy"], row["lr"])
            if not finite:
                status, diverged_epoch = "diverged", epoch
                log.warning("loss became NaN or infinite in epoch %d: trial stopped as diverged",
                            epoch)
                break
            if best.update(epoch, row, state.params):
                stopped_early = True
                log.info("early stopping: %s did not improve for %d epochs (best epoch %d)",
                         best.cfg.monitor, best.cfg.patience, best.epoch)
                break
    finally:
        if metrics_file:
            metrics_file.close()

    test = {}
    if best.params is not None:
        t = jax.device_get(progs.evaluate(best.params, hp, jnp.asarray(ds.x_test),
                                          jnp.asarray(ds.y_test)))
        test = {f"test/{k}": float(v) for k, v in t.items()}
    objective = float(best.row[cfg.objective.metric]) if status == "ok" else None
    result = Result(
        status=status, objective=objective, objective_metric=cfg.objective.metric,
        objective_mode=cfg.objective.mode, best_epoch=best.epoch,
        best={k: v for k, v in best.row.items() if k != "epoch"}, test=test, epochs_run=epoch,
        stopped_early=stopped_early, diverged_epoch=diverged_epoch,
        compile_time_s=round(CompileStats.seconds - compile_s0, 4),
        train_time_s=round(fit_s, 4),
        samples_per_s=round(epoch * samples_per_epoch / train_s, 1) if train_s > 0 else 0.0,
        num_params=progs.num_params(state.params), seed=cfg.train.seed)
    log.info("%s: %s=%s at best epoch %s, test/accuracy=%s, %d new compilations (%.2f s)",
             status, cfg.objective.metric, _fmt(objective), best.epoch,
             _fmt(test.get("test/accuracy")), CompileStats.count - compile_count,
             result.compile_time_s)
    if output_dir:
        write_result(result, output_dir)
    return result
