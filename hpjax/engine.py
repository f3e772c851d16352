"""The population engine: trials that share a signature train together as one vmapped program.

`train_population(cfgs)` stacks the trials' traced hyperparameters (`hpjax.hparams`) along a
leading population axis and runs `jit(vmap(train_epoch))` once per epoch for all of them; the
host checks each member's metrics after every epoch. A member that diverges (NaN/inf loss) or
stops early is frozen: its state stops updating, its best-epoch parameters are kept, and nothing
it does reaches another member. A single run (`run(cfg)`) is a population of one.
"""

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from hpjax import checkpoint
from hpjax import data as data_lib
from hpjax.config import Config, ConfigError, EarlyStoppingConfig, worst_objective
from hpjax.hparams import hparams, signature
from hpjax.progress import EpochReport, log_report
from hpjax.train import CompileStats, build_fns, member_keys

log = logging.getLogger("hpjax")


# ---------------------------------------------------------------------------------------------
# Compiled population programs, cached by signature
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Population:
    init: Callable  # (hp_P, seeds_U, owner_P) -> state_P
    # (state_P, hp_P, active_P, fold_P, x, y, seeds_U, owner_P) -> (state_P, metrics_P)
    epoch: Callable
    evaluate: Callable  # (params_P, hp_P, fold_P, x, y) -> {"loss": [P], "accuracy": [P]}
    keep: Callable  # (mask_P, new_P, old_P) -> where(mask, new, old) per member
    steps_per_epoch: int


def _where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per member: `new` where `mask`, else `old`, for every leaf with a leading member axis."""
    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)
    return jax.tree.map(pick, new, old)


def build_population(cfg: Config, ds: data_lib.Dataset,
                     activation: Optional[int] = None) -> Population:
    fns = build_fns(cfg, num_classes=ds.num_classes, input_shape=ds.input_shape,
                    n_train=ds.n_train, activation=activation)
    # Cross-validation: the data has a fold axis, and each member reads its own fold's arrays.
    axis = 0 if ds.folds else None
    train_step = jax.vmap(fns.train_step, in_axes=(0, axis, axis, 0, 0, 0))
    vmap_evaluate = jax.vmap(fns.evaluate, in_axes=(0, 0, axis, axis))

    def member_data(fold, x, y):
        return (x[fold], y[fold]) if ds.folds else (x, y)

    def evaluate(params, hp, fold, x, y):
        return vmap_evaluate(params, hp, *member_data(fold, x, y))

    def epoch(states, hp, active, fold, x, y, seeds, owner):
        """`vmap(fns.train_epoch)`, except that each step's dropout noise is drawn once per
        distinct seed (`seeds`, of which member i has `seeds[owner[i]]`) and shared by the
        members with that seed: the same numbers, and on a CPU the random-number generator
        was a quarter of a 32-member epoch. Active members are all at the same step."""
        x, y = member_data(fold, x, y)
        order = jax.vmap(fns.batches, in_axes=(0, None))(states, ds.n_train)
        dropout_keys = jax.vmap(lambda s: member_keys(s)[1])(seeds)
        step0 = jnp.max(jnp.where(active, states.step, 0))

        def step(s, t_idx):
            t, idx = t_idx
            noise = jax.vmap(fns.noise, in_axes=(0, None))(dropout_keys, step0 + t)
            return train_step(hp, x, y, s, idx, jax.tree.map(lambda w: w[owner], noise))

        steps = jnp.arange(fns.steps_per_epoch)
        new, (loss, acc) = jax.lax.scan(step, states, (steps, jnp.swapaxes(order, 0, 1)))
        metrics = jax.vmap(fns.epoch_metrics)(new, hp, loss.T, acc.T)
        # A frozen member keeps its state: keys never change, so only these fields are picked.
        frozen = new.replace(step=_where(active, new.step, states.step),
                             params=_where(active, new.params, states.params),
                             opt_state=_where(active, new.opt_state, states.opt_state))
        return frozen, metrics

    def init(hp, seeds, owner):
        """`vmap(fns.init)`, except that the parameters are drawn once per distinct seed, in a
        loop: a vmapped draw (threefry) compiled twice as long (1.6 s against 0.8 on CPU)."""
        params = jax.lax.map(fns.init_params, seeds)
        return jax.vmap(fns.init)(hp, jax.tree.map(lambda p: p[owner], params))

    return Population(
        init=jax.jit(init),
        epoch=jax.jit(epoch, donate_argnums=0),
        evaluate=jax.jit(evaluate),
        keep=jax.jit(_where),
        steps_per_epoch=fns.steps_per_epoch)


def distinct_seeds(seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct seeds, padded to a power of two so that their count rarely recompiles; for each
    member the index of its seed in them)."""
    distinct = list(dict.fromkeys(seeds))
    owner = np.array([distinct.index(s) for s in seeds], np.int32)
    distinct += distinct[-1:] * (padded_size(len(distinct)) - len(distinct))
    return np.array(distinct, np.int32), owner


_POPULATIONS: dict[tuple, Population] = {}


def population(cfg: Config, ds: data_lib.Dataset,
               activation: Optional[int] = None) -> Population:
    """`build_population` cached by signature: every trial of a sweep in one process shares it.

    `activation` fixes the activation in the program (see `hpjax.train.build_fns`).
    """
    key = (signature(cfg), ds.input_shape, ds.num_classes, ds.n_train, ds.folds, activation)
    if key not in _POPULATIONS:
        _POPULATIONS[key] = build_population(cfg, ds, activation)
    return _POPULATIONS[key]


# Populations at least this large fix a shared activation in their program (see train_population).
FIXED_ACTIVATION_FROM = 8


def split_devices(size: int, devices: int) -> int:
    """Over how many devices a population of `size` members splits: the most that take equal
    slices (32 members on 12 cores: 8 devices of 4 members)."""
    return max(d for d in range(1, min(size, devices) + 1) if size % d == 0)


def _shardings(size: int) -> tuple:
    """(members, everywhere): how a population of `size` spreads over several devices (the CPU
    cores under `hpjax`, see `hpjax.app.use_cpu_cores`, or GPUs): each device trains a slice of
    the members, and holds all of the data. (None, None) on one device."""
    devices = jax.devices()
    devices = devices[:split_devices(size, len(devices))]
    if len(devices) < 2:
        return None, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devices), ("members",))
    return NamedSharding(mesh, PartitionSpec("members")), NamedSharding(mesh, PartitionSpec())


def _put(array: Any, sharding: Any) -> jax.Array:
    return jnp.asarray(array) if sharding is None else jax.device_put(array, sharding)


def padded_size(n: int) -> int:
    """Populations are padded to a power of two, so a smaller last batch reuses the program."""
    return 1 << (n - 1).bit_length()


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    status: str  # "ok", "diverged", or "failed" (a config error, in a sweep)
    objective: Optional[float]  # null unless ok; the task function then returns the worst
    objective_metric: str
    objective_mode: str
    best_epoch: Optional[int]
    best: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    epochs_run: int = 0
    stopped_early: bool = False
    diverged_epoch: Optional[int] = None
    compile_time_s: float = 0.0  # a population's time is shared equally by its members
    train_time_s: float = 0.0
    samples_per_s: float = 0.0
    num_params: int = 0
    seed: int = 0
    launcher: str = "basic"
    error: Optional[str] = None
    # A trial of several members (train.repeats > 1, data.cv_folds > 1): the values above are
    # means over members; `members` holds each member's seed, fold, status, objective, best epoch
    # and test metrics; `objective_std` is the standard deviation of their objectives.
    objective_std: Optional[float] = None
    members: Optional[dict] = None
    fold: Optional[int] = None  # the fold of a single member, in cross-validation
    resumed_from_epoch: Optional[int] = None  # continued from the checkpoint of this epoch


def sweeper_value(result: Result) -> float:
    """What the task function returns: the objective, or the worst value when there is none."""
    return result.objective if result.objective is not None else worst_objective(
        result.objective_mode)


@dataclass
class Outcome:
    """What one trial produced: its result and its metrics.jsonl rows."""

    result: Result
    rows: list = field(default_factory=list)


@dataclass
class BestEpoch:
    """Tracks the best epoch by the monitored metric and counts the patience of early stopping,
    as Keras' `EarlyStopping(restore_best_weights=True)` does."""

    cfg: EarlyStoppingConfig
    epoch: Optional[int] = None
    row: dict = field(default_factory=dict)

    def update(self, epoch: int, row: dict) -> bool:
        """Records `epoch` if it improved on the best; returns True when training should stop."""
        value, c = row[self.cfg.monitor], self.cfg
        if self.epoch is None or (value < self.row[c.monitor] - c.min_delta if c.mode == "min"
                                  else value > self.row[c.monitor] + c.min_delta):
            self.epoch, self.row = epoch, row
            return False
        return c.patience is not None and epoch - self.epoch >= c.patience


def check_fits(cfg: Config, ds: data_lib.Dataset) -> None:
    """The checks that need the data: run before anything compiles."""
    n = ds.n_train
    if cfg.train.batch_size > n:
        raise ConfigError("train.batch_size", cfg.train.batch_size,
                          f"must be an integer between 1 and the training-set size {n}")
    if cfg.model.name == "cnn" and len(ds.input_shape) != 3:
        raise ConfigError("model", "cnn", "needs image-shaped data: set data.image_shape="
                          "[height,width,channels] (the digits set has it)")


def json_safe(metrics: dict) -> dict:
    return {k: (v if math.isfinite(v) else None) if isinstance(v, float) else v
            for k, v in metrics.items()}


def write_result(result: Result, output_dir: str) -> None:
    with open(os.path.join(output_dir, "result.json"), "w") as f:
        json.dump(json_safe(asdict(result)) | {"best": json_safe(result.best)}, f, indent=2)


def write_metrics(rows: list, output_dir: str) -> None:
    with open(os.path.join(output_dir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(json_safe(row)) + "\n" for row in rows)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------------------------------------
# The host loop
# ---------------------------------------------------------------------------------------------
def train_population(cfgs: list[Config], *, folds: Optional[list[int]] = None,
                     launcher: str = "basic",
                     on_epoch: Optional[Callable[[int, dict], None]] = None,
                     on_progress: Optional[Callable[[EpochReport], None]] = None,
                     checkpoint_dirs: Optional[list[str]] = None) -> list[Outcome]:
    """Trains configs of one signature together; returns one `Outcome` per config, in order.

    Args:
      cfgs: validated configs whose `hpjax.hparams.signature` is the same.
      folds: with `data.cv_folds` > 1, the fold each config trains on (default: fold 0).
      launcher: recorded in each result.
      on_epoch: called with (member index, metrics row) after every epoch of a running member.
      on_progress: called with the population's `EpochReport` after every epoch; by default a
        population of several members logs it.
      checkpoint_dirs: one folder per member: with `train.checkpoint_every` > 0 each member
        saves its state there, and a population whose members all saved an epoch continues
        from the latest such epoch (see `hpjax.checkpoint`).
    Raises:
      ConfigError: the data cannot be loaded or does not fit the config (before any compile).
    """
    cfg0, n = cfgs[0], len(cfgs)
    assert all(signature(c) == signature(cfg0) for c in cfgs), "one signature per population"
    ds = data_lib.load(cfg0.data)
    check_fits(cfg0, ds)
    compile_s0 = CompileStats.seconds
    size = padded_size(n)
    # Under vmap a traced activation computes every branch: when all members of a large
    # population share one, fix it. Small ones keep it traced: one program serves them all.
    shared = {c.activation.index for c in cfgs}
    pop = population(cfg0, ds, shared.pop() if n >= FIXED_ACTIVATION_FROM and len(shared) == 1
                     else None)
    hp_list = [hparams(c) for c in cfgs]
    hp = jax.tree.map(lambda *xs: np.stack(xs), *hp_list, *[hp_list[-1]] * (size - n))
    seeds, owner = distinct_seeds(hp["seed"].tolist())
    hp = jax.tree.map(jnp.asarray, hp)
    folds = list(folds) if folds is not None else [0] * n
    fold = jnp.asarray(folds + folds[-1:] * (size - n), jnp.int32)
    x_tr, y_tr, x_va, y_va = map(jnp.asarray, (ds.x_train, ds.y_train, ds.x_val, ds.y_val))
    members, everywhere = _shardings(size)
    if members is not None:  # the members split over the devices, the data on each
        log.info("population of %d split over %d devices", size, members.mesh.size)
        hp, fold = jax.device_put((hp, fold), members)
        x_tr, y_tr, x_va, y_va = jax.device_put((x_tr, y_tr, x_va, y_va), everywhere)
    seeds, owner = _put(seeds, everywhere), _put(owner, members)
    samples_per_epoch = pop.steps_per_epoch * cfg0.train.batch_size

    states = pop.init(hp, seeds, owner)
    if members is not None:  # as the epoch's output is, so that its program compiles once
        states = jax.device_put(states, members)
    best_params = jax.tree.map(jnp.copy, states.params)
    trackers = [BestEpoch(c.train.early_stopping) for c in cfgs]
    outcomes = [Outcome(Result("ok", None, c.objective.metric, c.objective.mode, None,
                               seed=c.train.seed, launcher=launcher,
                               fold=f if ds.folds else None))
                for c, f in zip(cfgs, folds, strict=True)]
    active = np.arange(size) < n
    train_s = [0.0] * n  # each member's share of the population's time in train_epoch
    every = cfg0.train.checkpoint_every
    dirs = checkpoint_dirs if every and checkpoint_dirs else None
    start = 1
    if dirs:
        resumed = _resume(dirs, cfgs, states, best_params, size)
        for d in dirs if resumed is None else ():
            checkpoint.clear(d)
        if resumed is not None:
            start, states, best_params, metas = resumed
            for i, meta in enumerate(metas):
                _restore_member(meta, outcomes[i], trackers[i], start - 1)
                active[i], train_s[i] = meta["active"], meta["train_s"]
                for row in outcomes[i].rows if on_epoch else ():
                    on_epoch(i, row)
    for epoch in range(start, cfg0.train.epochs + 1):
        c0, t0 = CompileStats.seconds, time.perf_counter()
        states, m = pop.epoch(states, hp, _put(active, members), fold, x_tr, y_tr, seeds, owner)
        jax.block_until_ready(states)
        t1 = time.perf_counter()
        val = pop.evaluate(states.params, hp, fold, x_va, y_va)
        m = jax.device_get(m) | {f"val/{k}": v for k, v in jax.device_get(val).items()}
        compiling = CompileStats.seconds - c0
        running = int(active[:n].sum())
        epoch_s = max(time.perf_counter() - t0 - compiling, 0.0) / running
        improved = np.zeros(size, bool)
        for i in np.flatnonzero(active[:n]):
            out, tracker = outcomes[i], trackers[i]
            train_s[i] += max(t1 - t0 - compiling, 0.0) / running
            row = {"epoch": epoch, **{k: float(v[i]) for k, v in m.items() if k != "finite"},
                   "epoch_time_s": round(epoch_s, 6)}
            out.rows.append(row)
            out.result.epochs_run = epoch
            if on_epoch:
                on_epoch(i, row)
            if not (m["finite"][i] and math.isfinite(row["val/loss"])):
                out.result.status, out.result.diverged_epoch = "diverged", epoch
                active[i] = False
                continue
            if tracker.update(epoch, row):
                out.result.stopped_early, active[i] = True, False
            improved[i] = tracker.epoch == epoch
        if improved.any():
            best_params = pop.keep(_put(improved, members), states.params, best_params)
        if on_progress or n > 1:
            (on_progress or log_report)(_epoch_report(epoch, cfg0, outcomes, trackers,
                                                      int(active[:n].sum())))
        if not active[:n].any():
            break
        if dirs and epoch % every == 0 and epoch < cfg0.train.epochs:
            for i in range(n):
                checkpoint.save(dirs[i], epoch, _member((states, best_params), i),
                                _member_meta(cfgs[i], outcomes[i], trackers[i], bool(active[i]),
                                             train_s[i]))

    test = jax.device_get(pop.evaluate(best_params, hp, fold, _put(ds.x_test, everywhere),
                                       _put(ds.y_test, everywhere)))
    num_params = sum(int(np.prod(p.shape[1:])) for p in jax.tree.leaves(states.params))
    compile_s = (CompileStats.seconds - compile_s0) / n
    for i, (cfg, out, tracker) in enumerate(zip(cfgs, outcomes, trackers, strict=True)):
        r = out.result
        if tracker.epoch is not None:
            r.test = {f"test/{k}": float(v[i]) for k, v in test.items()}
            r.best_epoch = tracker.epoch
            r.best = {k: v for k, v in tracker.row.items() if k != "epoch"}
        if r.status == "ok":
            r.objective = float(tracker.row[cfg.objective.metric])
        r.compile_time_s = round(compile_s, 4)
        r.train_time_s = round(sum(row["epoch_time_s"] for row in out.rows), 4)
        r.samples_per_s = round(r.epochs_run * samples_per_epoch / train_s[i], 1) \
            if train_s[i] > 0 else 0.0
        r.num_params = num_params
    return outcomes


def members_per_trial(cfg: Config) -> int:
    return cfg.train.repeats * cfg.data.cv_folds


def checkpoint_dir(output_dir: str, member: int = 0, members: int = 1) -> str:
    """Where a trial's member keeps its checkpoints: `checkpoints/` in the job directory."""
    path = os.path.join(output_dir, "checkpoints")
    return path if members == 1 else os.path.join(path, f"member_{member}")


def _member(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def _member_meta(cfg: Config, out: Outcome, tracker: BestEpoch, active: bool,
                 train_s: float) -> dict:
    """What the host loop knows of a member, to continue it from a checkpoint."""
    r = out.result
    return {"config": repr(cfg), "rows": out.rows, "active": active, "train_s": train_s,
            "status": r.status, "diverged_epoch": r.diverged_epoch,
            "stopped_early": r.stopped_early, "best_epoch": tracker.epoch,
            "best_row": tracker.row}


def _restore_member(meta: dict, out: Outcome, tracker: BestEpoch, epoch: int) -> None:
    r = out.result
    out.rows = meta["rows"]
    r.status, r.diverged_epoch, r.stopped_early = (meta["status"], meta["diverged_epoch"],
                                                   meta["stopped_early"])
    r.epochs_run, r.resumed_from_epoch = len(out.rows), epoch
    tracker.epoch, tracker.row = meta["best_epoch"], meta["best_row"]


def _resume(dirs: list[str], cfgs: list[Config], states: Any, best_params: Any,
            size: int) -> Optional[tuple]:
    """(next epoch, states, best params, metas) from the members' latest common checkpoint;
    None when a member has none, or one was saved by another config (that run starts anew)."""
    epoch = checkpoint.common_epoch(dirs)
    if epoch is None:
        return None
    like = _member((states, best_params), 0)
    members, metas = [], []
    for d, cfg in zip(dirs, cfgs, strict=True):
        tree, meta = checkpoint.restore(d, epoch, like)
        if meta["config"] != repr(cfg):
            log.warning("checkpoint in %s is of another config: training from the start", d)
            return None
        members.append(tree)
        metas.append(meta)
    members += members[-1:] * (size - len(members))  # the padding members
    states, best_params = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    log.info("resumed %d member%s from the checkpoint of epoch %d", len(dirs),
             "" if len(dirs) == 1 else "s", epoch)
    return epoch + 1, states, best_params, metas


def train_trials(cfgs: list[Config], *, launcher: str = "basic",
                 on_progress: Optional[Callable[[EpochReport], None]] = None,
                 output_dirs: Optional[list[str]] = None) -> list[Outcome]:
    """`train_population` with each trial's `train.repeats` seeds and `data.cv_folds` folds as
    members of their own; a trial of several members reports their mean (as scikit-learn's
    `cv_results_` do for folds). `output_dirs`: the trials' job directories, where their
    checkpoints go (`train.checkpoint_every`)."""
    members, folds, owners, dirs = [], [], [], []
    for i, cfg in enumerate(cfgs):
        for r in range(cfg.train.repeats):
            seeded = cfg if r == 0 else dataclasses.replace(
                cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + r))
            for f in range(cfg.data.cv_folds):
                members.append(seeded)
                folds.append(f)
                owners.append(i)
                if output_dirs and all(output_dirs):
                    dirs.append(checkpoint_dir(output_dirs[i], r * cfg.data.cv_folds + f,
                                               members_per_trial(cfg)))
    outcomes = train_population(members, folds=folds, launcher=launcher,
                                on_progress=on_progress and _per_trial(on_progress, owners),
                                checkpoint_dirs=dirs or None)
    return [aggregate([o for o, owner in zip(outcomes, owners, strict=True) if owner == i])
            for i in range(len(cfgs))]


def _per_trial(on_progress: Callable, owners: list) -> Callable[[EpochReport], None]:
    """Progress of a population of trials' members, reported by trial: members are counted,
    the best member is named by its trial's index."""
    return lambda r: on_progress(dataclasses.replace(
        r, best_member=None if r.best_member is None else owners[r.best_member]))


def _mean(dicts: list[dict]) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]} if dicts else {}


def aggregate(seeds: list[Outcome]) -> Outcome:
    """One trial's outcome from the outcomes of its members (seeds, folds): means, and each
    member's values."""
    if len(seeds) == 1:
        return seeds[0]
    results = [o.result for o in seeds]
    r = dataclasses.replace(results[0], fold=None)
    bad = [x.status for x in results if x.status != "ok"]
    r.status = bad[0] if bad else "ok"
    objectives = [x.objective for x in results]
    r.objective = float(np.mean(objectives)) if not bad else None
    r.objective_std = float(np.std(objectives)) if not bad else None
    finished = [x for x in results if x.best_epoch is not None]
    r.best = _mean([x.best for x in finished])
    r.test = _mean([x.test for x in finished])
    r.best_epoch = int(np.median([x.best_epoch for x in finished])) if finished else None
    r.epochs_run = max(x.epochs_run for x in results)
    r.stopped_early = all(x.stopped_early for x in results)
    diverged = [x.diverged_epoch for x in results if x.diverged_epoch is not None]
    r.diverged_epoch = min(diverged) if diverged else None
    for key in ("compile_time_s", "train_time_s", "samples_per_s"):
        setattr(r, key, round(sum(getattr(x, key) for x in results), 4))
    r.members = {"seed": [x.seed for x in results],
                 **({"fold": [x.fold for x in results]} if results[0].fold is not None else {}),
                 "status": [x.status for x in results], "objective": objectives,
                 "best_epoch": [x.best_epoch for x in results],
                 **{k: [x.test.get(k) for x in results] for k in r.test}}
    epochs = max(len(o.rows) for o in seeds)
    rows = []
    for e in range(epochs):
        ran = [o.rows[e] for o in seeds if len(o.rows) > e]
        rows.append({**_mean(ran), "epoch": e + 1, "members": len(ran)})
    return Outcome(r, rows)


def _epoch_report(epoch: int, cfg: Config, outcomes: list, trackers: list,
                  running: int) -> EpochReport:
    metric, mode = cfg.objective.metric, cfg.objective.mode
    scores = [(t.row[metric], i) for i, t in enumerate(trackers)
              if t.epoch is not None and outcomes[i].result.status == "ok"]
    best = (max if mode == "max" else min)(scores) if scores else (None, None)
    return EpochReport(epoch, cfg.train.epochs, running, len(outcomes), metric, *best)


def run(cfg: Config, output_dir: Optional[str] = None, launcher: str = "basic") -> Result:
    """Trains one configuration and, given `output_dir`, writes `metrics.jsonl` and `result.json`.

    Args:
      cfg: a validated config (`hpjax.config.to_config`).
      output_dir: the job's directory; None writes nothing.
      launcher: recorded in the result.
    Returns:
      The trial's `Result`; `Result.objective` is None when training diverged.
    Raises:
      ConfigError: the data cannot be loaded or does not fit the config (before any compile).
    """
    compile_count, hits = CompileStats.count, CompileStats.cache_hits
    files = []  # metrics.jsonl, opened at the first epoch: a config error writes nothing

    def on_epoch(_: int, row: dict) -> None:
        if output_dir:
            if not files:
                files.append(open(os.path.join(output_dir, "metrics.jsonl"), "w"))
            files[0].write(json.dumps(json_safe(row)) + "\n")
            files[0].flush()
        log.info("epoch %3d/%d  train/loss %.4f  train/acc %.4f  val/loss %.4f  val/acc %.4f"
                 "  lr %.3g", row["epoch"], cfg.train.epochs, row["train/loss"],
                 row["train/accuracy"], row["val/loss"], row["val/accuracy"], row["lr"])

    try:
        if members_per_trial(cfg) > 1:  # metrics.jsonl holds the members' mean per epoch
            outcome = train_trials([cfg], launcher=launcher,
                                   output_dirs=[output_dir] if output_dir else None)[0]
            if output_dir:
                write_metrics(outcome.rows, output_dir)
        else:
            outcome = train_population([cfg], on_epoch=on_epoch, launcher=launcher,
                                       checkpoint_dirs=[
                checkpoint_dir(output_dir)] if output_dir else None)[0]
    finally:
        for f in files:
            f.close()
    result = outcome.result
    report_result(result, CompileStats.count - compile_count, CompileStats.cache_hits - hits)
    if output_dir:
        write_result(result, output_dir)
    return result


def report_result(result: Result, compilations: Optional[int] = None,
                  cache_hits: int = 0) -> None:
    if result.status == "diverged":
        log.warning("loss became NaN or infinite in epoch %d: trial stopped as diverged",
                    result.diverged_epoch)
    elif result.stopped_early:
        log.info("early stopping after epoch %d (best epoch %d)", result.epochs_run,
                 result.best_epoch)
    log.info("%s: %s=%s at best epoch %s, test/accuracy=%s%s", result.status,
             result.objective_metric, _fmt(result.objective), result.best_epoch,
             _fmt(result.test.get("test/accuracy")),
             f", {compilations} new compilations ({result.compile_time_s:.2f} s, "
             f"{cache_hits} from the persistent cache)" if compilations is not None else "")
