"""Populations: the trainer's functions vmapped over members and jitted once per signature.

A population's members share a static signature (`hpjax.engine.hparams.signature`); their traced
numbers are stacked along a leading member axis (`stack`), padded to a power of two so that a
smaller batch reuses the program, and split over the devices where there are several.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from hpjax.config import Config
from hpjax.data import Dataset
from hpjax.engine import trainer
from hpjax.engine.compile import compiler_options, use_cpu_cores
from hpjax.engine.hparams import hparams, signature, static
from hpjax.engine.model import build as build_model

# Populations at least this large fix an activation all their members share in the program:
# under vmap a traced activation computes every branch of its `lax.switch`.
FIXED_ACTIVATION_FROM = 8


@dataclass(frozen=True)
class Population:
    """The compiled functions of one signature, each over a leading member axis `_P`."""

    init: Callable  # (hp_P, seeds_U, owner_P) -> state_P
    # (state_P, best_P, keep_P, hp_P, active_P, fold_P, x, y, seeds_U, owner_P)
    #   -> (state_P, best_P, metrics_P)
    epoch: Callable
    # (new_P, old_P, pick_P, hp_P, fold_P, x, y, n) -> {"loss": [P], "accuracy": [P]} at
    # where(pick, new, old), over the first n samples of a split padded by `eval_split`
    evaluate: Callable
    keep: Callable  # (mask_P, new_P, old_P) -> where(mask, new, old) per member
    spec: trainer.Spec
    take: Callable = None  # (tree_P, idx_Q) -> tree_Q: members gathered into a new population
    # (new_P, old_P, pick_P, hp_P, fold_P, x) -> outputs_P at where(pick, new, old) (host metrics)
    predict: Callable = None
    # the population sizes its epoch program ran at in this process (compiled)
    sizes: set = field(default_factory=set, compare=False, hash=False)


def where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per member: `new` where `mask`, else `old`, for every leaf with a leading member axis."""
    def pick(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)
    return jax.tree.map(pick, new, old)


def take(tree: Any, idx: jax.Array) -> Any:
    """The members `idx` of every leaf (a gather on the device: no copy through the host)."""
    return jax.tree.map(lambda a: a[idx], tree)


def _epoch(spec: trainer.Spec, folds: bool, states: Any, best: Any, keep: jax.Array, hp: Any,
           active: jax.Array, fold: jax.Array, x: jax.Array, y: jax.Array, seeds: jax.Array,
           owner: jax.Array) -> tuple:
    """One epoch of every member, after keeping the variables it comes in with as the best of
    the members in `keep`: the host learns that an epoch improved only from the validation
    after it, so the next epoch's program keeps them (a program of their own would compile
    too; the evaluation picks them where no epoch follows). Each step's dropout key is made
    once per distinct seed
    (`seeds`; member i has `seeds[owner[i]]`) and shared by the members with that seed; when
    they all share one (a sweep's usual `train.seed`), it stays unbatched, so the dropout masks'
    random bits are drawn once for the whole population: the same numbers as drawing per
    member, for a fraction of the random-number work. A frozen
    member (`active` false) keeps its state. The active members that share a seed are at one
    step (a refilled population gives each member a seed row of its own: members at different
    epochs)."""
    best = where(keep, states.params, best)
    if folds:  # cross-validation: each member reads its own fold's arrays
        x, y = x[fold], y[fold]
    data_axis = 0 if folds else None
    one_seed = seeds.shape[0] == 1
    step_fn = jax.vmap(functools.partial(trainer.train_step, spec),
                       in_axes=(0, data_axis, data_axis, 0, 0, None if one_seed else 0))
    order = jax.vmap(functools.partial(trainer.batches, spec), in_axes=(0, None))(
        states, spec.n_train)
    dropout_keys = jax.vmap(lambda s: trainer.member_keys(s)[1])(seeds)
    # each seed row's step: that of its active members
    row_step = jnp.maximum(jax.ops.segment_max(jnp.where(active, states.step, 0), owner,
                                               num_segments=seeds.shape[0]), 0)

    def step(s: Any, t_idx: tuple) -> tuple:
        t, idx = t_idx
        noise = jax.vmap(functools.partial(trainer.noise, spec))(dropout_keys, row_step + t)
        return step_fn(hp, x, y, s, idx, noise[0] if one_seed else noise[owner])

    steps = jnp.arange(spec.steps_per_epoch)
    new, (loss, acc) = jax.lax.scan(step, states, (steps, jnp.swapaxes(order, 0, 1)))
    metrics = jax.vmap(functools.partial(trainer.epoch_metrics, spec))(new, loss.T, acc.T)
    # Keys never change, so only these fields are picked.
    kept = new.replace(step=where(active, new.step, states.step),
                       params=where(active, new.params, states.params),
                       opt_state=where(active, new.opt_state, states.opt_state))
    return kept, best, metrics


def _init(spec: trainer.Spec, hp: Any, seeds: jax.Array, owner: jax.Array) -> Any:
    """Every member's state. The parameters are drawn for each member, in a loop (a vmapped
    threefry draw compiles about twice as long): a module's may depend on its traced numbers."""
    params = jax.lax.map(lambda a: trainer.init_params(spec, *a), (seeds[owner], hp))
    return jax.vmap(functools.partial(trainer.init_state, spec))(hp, params)


def _evaluate(spec: trainer.Spec, folds: bool, new: Any, old: Any, pick: jax.Array, hp: Any,
              fold: jax.Array, x: jax.Array, y: jax.Array, n: jax.Array) -> dict:
    """Each member's metrics at `new` where `pick`, else `old` (its current or its best
    variables), over the first `n` samples of `x` and `y`: every split, padded to one length,
    shares this program."""
    if folds:
        x, y = x[fold], y[fold]
    data_axis = 0 if folds else None
    return jax.vmap(functools.partial(trainer.evaluate, spec), in_axes=(
        0, 0, data_axis, data_axis, None))(where(pick, new, old), hp, x, y, n)


def _predict(spec: trainer.Spec, folds: bool, new: Any, old: Any, pick: jax.Array, hp: Any,
             fold: jax.Array, x: jax.Array) -> jax.Array:
    if folds:
        x = x[fold]
    return jax.vmap(functools.partial(trainer.predict, spec),
                    in_axes=(0, 0, 0 if folds else None))(where(pick, new, old), hp, x)


def build(cfg: Config, ds: Dataset, activation: Optional[int] = None) -> Population:
    """The jitted population functions of `cfg`'s signature (its traced values unused)."""
    k = trainer.outputs(cfg, ds.num_classes)
    spec = trainer.Spec(static(cfg), build_model(cfg.model, k), ds.input_shape, ds.n_train,
                        activation, ds.y_scale, k)
    trainer.check_model(spec, k, {
        **{k: getattr(cfg.model, k) for k in spec.model.traced},
        **({"activation": cfg.activation.index} if "activation" in spec.model.fill else {}),
        **({"negative_slope": cfg.activation.negative_slope}
           if "negative_slope" in spec.model.fill else {})})
    folds = bool(ds.folds)
    jit = functools.partial(jax.jit, compiler_options=compiler_options())
    return Population(
        init=jit(functools.partial(_init, spec)),
        epoch=jit(functools.partial(_epoch, spec, folds), donate_argnums=(0, 1)),
        evaluate=jit(functools.partial(_evaluate, spec, folds)),
        keep=jit(where),
        spec=spec,
        take=jit(take),
        predict=jit(functools.partial(_predict, spec, folds)))


_CACHE: dict[tuple, Population] = {}


def get(cfg: Config, ds: Dataset, activation: Optional[int] = None) -> Population:
    """`build` cached by signature and data shape: every population of a process shares it."""
    use_cpu_cores()  # before the first program starts JAX's backend
    key = (signature(cfg), ds.input_shape, ds.num_classes, ds.n_train, ds.folds, activation)
    if key not in _CACHE:
        _CACHE[key] = build(cfg, ds, activation)
    return _CACHE[key]


def eval_split(ds: Dataset, split: str, batch: int) -> tuple[np.ndarray, np.ndarray, np.int32]:
    """(x, y, n) of `split` (val or test): its n samples padded with zeros to the length of the
    longer of the two, rounded up to whole evaluation batches of at most `batch`
    (`train.eval_batch_size`), so that one compiled evaluation serves both splits."""
    axis = 1 if ds.folds else 0  # after the fold axis
    n = ds.x_val.shape[axis], ds.x_test.shape[axis]
    longest = max(*n, 1)
    size = -(-longest // min(batch, longest)) * min(batch, longest)
    x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    own = x.shape[axis]

    def pad(a: np.ndarray) -> np.ndarray:
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, size - own)
        return np.pad(a, widths) if size > own else a

    return pad(x), pad(y), np.int32(own)


def padded_size(n: int) -> int:
    """Populations are padded to a power of two, so a smaller last batch reuses the program."""
    return 1 << (n - 1).bit_length()


# A smaller population pads to a size already compiled when it is at most this many times its own
PAD_TO_COMPILED = 4


def compiled_size(pop: Population, n: int) -> int:
    """The size of a population of `n` members: the next power of two, or, when its program
    has not run at that size but has at a larger one (at most `PAD_TO_COMPILED` times), that
    size: a sweep's smaller last batch (10,000 = 156 x 64 + 16) reuses the program of the
    batches before instead of compiling its own, its padding members' results dropped."""
    size = padded_size(n)
    if size in pop.sizes:
        return size
    return min((s for s in pop.sizes if size < s <= PAD_TO_COMPILED * size), default=size)


def distinct_seeds(seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct seeds, padded to a power of two so that their count rarely recompiles; for each
    member the index of its seed in them)."""
    distinct = list(dict.fromkeys(seeds))
    owner = np.array([distinct.index(s) for s in seeds], np.int32)
    distinct += distinct[-1:] * (padded_size(len(distinct)) - len(distinct))
    return np.array(distinct, np.int32), owner


def split_devices(size: int, devices: int) -> int:
    """Over how many devices a population of `size` members splits: the most that take equal
    slices (32 members on 12 cores: 8 devices of 4 members)."""
    return max(d for d in range(1, min(size, devices) + 1) if size % d == 0)


@dataclass(frozen=True)
class Placement:
    """Where a population's arrays live: `members` splits the member axis over the devices,
    `everywhere` copies an array to each; both None on one device."""

    members: Any = None
    everywhere: Any = None

    @classmethod
    def of(cls, size: int) -> "Placement":
        devices = jax.devices()
        devices = devices[:split_devices(size, len(devices))]
        if len(devices) < 2:
            return cls()
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("members",))
        return cls(NamedSharding(mesh, PartitionSpec("members")),
                   NamedSharding(mesh, PartitionSpec()))

    @property
    def devices(self) -> int:
        return 1 if self.members is None else self.members.mesh.size

    # `jax.device_put`, not `jnp.asarray`: a transfer, where `asarray` compiles a small program
    # per shape and dtype.
    def per_member(self, tree: Any) -> Any:
        return jax.device_put(tree, self.members)

    def shared(self, tree: Any) -> Any:
        return jax.device_put(tree, self.everywhere)


def copy(tree: Any) -> Any:
    """A copy of every leaf on its own device, without compiling anything (`jnp.copy` compiles
    a program per shape): the best parameters start as the first state's, which the epoch
    program then donates."""
    if _device_put_copies():
        return jax.device_put(tree, may_alias=False)
    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


@functools.cache
def _device_put_copies() -> bool:
    """Whether `device_put(x, may_alias=False)` gives `x` a buffer of its own: older JAX (0.5)
    returns a new array on the same buffer, which the epoch program's donation then deletes."""
    x = jax.device_put(np.zeros(1, np.float32))
    return jax.device_put(x, may_alias=False).unsafe_buffer_pointer() != x.unsafe_buffer_pointer()


@dataclass(frozen=True)
class Stacked:
    """A population's per-member inputs, padded and placed: traced numbers, folds, seeds."""

    hp: Any
    fold: jax.Array
    seeds: jax.Array
    owner: jax.Array
    size: int


def stack(cfgs: list[Config], folds: list[int], place: Placement,
          own_rows: bool = False, size: Optional[int] = None) -> Stacked:
    """The members' `hparams` stacked along the member axis, padded by repeating the last to
    `size` (default: the next power of two); `own_rows`: each member draws its randomness from
    a seed row of its own (members of a refilled population train at different epochs)."""
    size = size or padded_size(len(cfgs))
    hp_list = [hparams(c) for c in cfgs]
    hp_list += hp_list[-1:] * (size - len(cfgs))
    hp = jax.tree.map(lambda *xs: np.stack(xs), *hp_list)
    if own_rows:
        seeds, owner = hp["train"]["seed"].astype(np.int32), np.arange(size, dtype=np.int32)
    else:
        seeds, owner = distinct_seeds(hp["train"]["seed"].tolist())
    fold = np.asarray(folds + folds[-1:] * (size - len(cfgs)), np.int32)
    return Stacked(place.per_member(hp), place.per_member(fold), place.shared(seeds),
                   place.per_member(owner), size)
