"""Where a population's batches come from: the data source seam of the host loop.

A `Feed` trains a population one epoch and evaluates it on a split. Two implement it:
`OnDevice`, the splits placed whole on the device and an epoch one compiled call (a scan over a
permutation per member), chosen for arrays and for sources that fit (`data.device_mb`); and
`Streamed`, a `hpjax.data.Stream` read through Grain, an epoch one compiled call per block of
`data.stream_block` batches, each block transferred once and shared by every member (the same
batch order for all; their seeds still differ for initialisation and dropout). `data.stream`
forces either. Epochs mean the same in both: one pass over the training split, its remainder
dropped, so early stopping, rungs, PBT intervals and checkpoints count them as before; streamed,
`train.steps_per_epoch` may set an epoch's steps instead (an endless split needs it).
"""

import concurrent.futures
import functools
import logging
import time
from collections import deque
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from hpjax.config import Config, ConfigError
from hpjax.data import Dataset, Stream
from hpjax.engine import host_metrics, trainer
from hpjax.engine.compile import compiler_options
from hpjax.engine.population import Population, eval_split, where

log = logging.getLogger("hpjax")


class Feed(Protocol):
    def place(self, place: Any) -> None:
        """Puts (or will put) the shared data where the population now lives."""

    def train(self, states: Any, best: Any, keep: np.ndarray, inputs: Any,
              active: jax.Array) -> tuple:
        """One epoch of every member, after `best` takes the variables of the members in `keep`
        (host mask): (states, best, metrics by name, one value per member)."""

    def evaluate(self, new: Any, old: Any, pick: np.ndarray, inputs: Any, split: str) -> dict:
        """{"loss", "accuracy"...}: one value per member, over `split` (val or test), at its
        variables in `new` where `pick` (host mask), else in `old`."""

    def ahead(self, states: Any, inputs: Any) -> list:
        """Starts compiling the epoch and evaluation programs for `states` (the init's output,
        as abstract arrays placed as the epoch receives them); returns their futures."""

    def state(self) -> dict:
        """What a checkpoint keeps to continue the data where it was (JSON)."""

    def restore(self, state: dict) -> None: ...

    def close(self) -> None: ...


class OnDevice:
    """The splits as arrays on the device (`hpjax.engine.population`'s epoch and evaluate)."""

    def __init__(self, ds: Dataset, pop: Population, place: Any) -> None:
        self.ds, self.pop = ds, pop
        batch = pop.spec.cfg.train.eval_batch_size
        # padded to one length: one compiled evaluation for both splits
        self.splits = {s: eval_split(ds, s, batch) for s in ("val", "test")}
        self.place(place)

    def place(self, place: Any) -> None:
        self.where = place
        self.train_data = place.shared((self.ds.x_train, self.ds.y_train))
        self.val_data = place.shared(self.splits["val"])

    def train(self, states: Any, best: Any, keep: np.ndarray, inputs: Any,
              active: jax.Array) -> tuple:
        i = inputs
        return self.pop.epoch(states, best, self.where.per_member(keep), i.hp, active, i.fold,
                              *self.train_data, i.seeds, i.owner)

    def ahead(self, states: Any, inputs: Any) -> list:
        """The epoch and evaluation programs compiled in background threads while the caller
        compiles and runs the init: where cores are free, the three compile at once. JAX keeps
        what they compile for the calls with these shapes and placements."""
        i, members = inputs, self.where.members
        mask = jax.ShapeDtypeStruct((i.size,), jnp.bool_, sharding=members)
        states = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=members, weak_type=a.weak_type), states)
        return [_COMPILER.submit(_compile, self.pop.epoch, states, states.params, mask, i.hp,
                                 mask, i.fold, *self.train_data, i.seeds, i.owner),
                _COMPILER.submit(_compile, self.pop.evaluate, states.params, states.params,
                                 mask, i.hp, i.fold, *self.val_data)]

    def evaluate(self, new: Any, old: Any, pick: np.ndarray, inputs: Any, split: str) -> dict:
        # the test split is read once or twice a population: not kept on the device
        data = self.val_data if split == "val" else self.where.shared(self.splits["test"])
        return self.pop.evaluate(new, old, self.where.per_member(pick), inputs.hp, inputs.fold,
                                 *data)

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass

    def close(self) -> None:
        pass


_COMPILER = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="hpjax-compile")


def _compile(program: Any, *args: Any) -> None:
    """`program` compiled for `args` (arrays or abstract ones); a failure is left to the call,
    which compiles again and raises it where it belongs."""
    try:
        program.lower(*args).compile()
    except Exception:  # noqa: BLE001
        log.debug("compiling ahead failed; the call compiles", exc_info=True)


def _block(spec: trainer.Spec, states: Any, hp: Any, active: jax.Array, sums: tuple,
           xs: jax.Array, ys: jax.Array, ws: jax.Array, seeds: jax.Array,
           owner: jax.Array) -> tuple:
    """Every member trains on the block's batches in turn (a padding step, `ws[k]` all false,
    changes nothing); `sums`: each member's running (loss, accuracy) sums of the epoch. The
    dropout keys are those of `population._epoch` at the same optimizer step."""
    one_seed = seeds.shape[0] == 1
    step_fn = jax.vmap(functools.partial(trainer.train_step, spec),
                       in_axes=(0, None, None, 0, None, None if one_seed else 0))
    dropout_keys = jax.vmap(lambda s: trainer.member_keys(s)[1])(seeds)
    row_step = jnp.maximum(jax.ops.segment_max(jnp.where(active, states.step, 0), owner,
                                               num_segments=seeds.shape[0]), 0)
    idx = jnp.arange(spec.batch_size)

    def step(carry: tuple, k_xyw: tuple) -> tuple:
        k, x, y, w = k_xyw

        def run(c: tuple) -> tuple:
            s, (loss_sum, aux_sum) = c
            noise = jax.vmap(functools.partial(trainer.noise, spec))(dropout_keys, row_step + k)
            s, (loss, aux) = step_fn(hp, x, y, s, idx, noise[0] if one_seed else noise[owner])
            return s, (loss_sum + loss, aux_sum + aux)

        return jax.lax.cond(w[0], run, lambda c: c, carry), None

    (new, sums), _ = jax.lax.scan(step, (states, sums), (jnp.arange(xs.shape[0]), xs, ys, ws))
    kept = new.replace(step=where(active, new.step, states.step),
                       params=where(active, new.params, states.params),
                       opt_state=where(active, new.opt_state, states.opt_state))
    return kept, sums


def _epoch_metrics(spec: trainer.Spec, states: Any, sums: tuple) -> dict:
    loss, aux = (s[:, None] / spec.steps_per_epoch for s in sums)
    return jax.vmap(functools.partial(trainer.epoch_metrics, spec))(states, loss, aux)


def _eval_block(spec: trainer.Spec, totals: tuple, params: Any, hp: Any, xs: jax.Array,
                ys: jax.Array, ws: jax.Array) -> tuple:
    """Each member's (loss, accuracy) sums over the block's samples of weight 1, added to
    `totals`."""
    def member(p: Any, h: Any, t: tuple) -> tuple:
        def batch(acc: tuple, xyw: tuple) -> tuple:
            x, y, w = xyw
            loss, aux = trainer.task_loss(spec, h, trainer.forward(spec, h, p, x)[0], y)
            return (acc[0] + jnp.sum(loss * w), acc[1] + jnp.sum(aux * w)), None

        return jax.lax.scan(batch, t, (xs, ys, ws))[0]

    return jax.vmap(member)(params, hp, totals)


_PROGRAMS: dict[int, tuple] = {}


def _programs(pop: Population) -> tuple:
    """(block, epoch metrics, eval block) of a population's signature, jitted once."""
    if id(pop) not in _PROGRAMS:
        spec = pop.spec
        jit = functools.partial(jax.jit, compiler_options=compiler_options())
        _PROGRAMS[id(pop)] = (pop, jit(functools.partial(_block, spec), donate_argnums=0),
                              jit(functools.partial(_epoch_metrics, spec)),
                              jit(functools.partial(_eval_block, spec)))
    return _PROGRAMS[id(pop)][1:]


class Streamed:
    """A `Stream` read through Grain: blocks of batches read ahead by threads or workers, put on
    the device ahead of the call that trains on them (`grain.experimental.device_put`), one
    transfer per block for the whole population. At most two blocks are in flight on the
    device: the host waits for the one before last before it sends another."""

    IN_FLIGHT = 2

    def ahead(self, states: Any, inputs: Any) -> list:
        return []  # its blocks' shapes come with the data

    def __init__(self, stream: Stream, pop: Population, place: Any) -> None:
        self.stream, self.pop = stream, pop
        self.block, self.finish, self.eval_block = _programs(pop)
        self.batch = pop.spec.batch_size
        self.steps = pop.spec.cfg.train.steps_per_epoch  # None: an epoch is a pass
        self.eval_batch = min(pop.spec.cfg.train.eval_batch_size, stream.n_val)
        self.wait_s = 0.0  # time the host waited for the input pipeline (bench_data.py)
        self.where = place
        self.iters: dict[str, Any] = {}
        self.pending: dict[str, Any] = {}  # iterator states to continue from

    def _device(self) -> Any:
        return self.where.everywhere  # None: one device

    def place(self, place: Any) -> None:
        """A compacted population on other devices: the iterators continue, putting there."""
        old, self.where = self._device(), place
        if self._device() != old:
            self.pending.update(self.state()["data"])
            self.close()

    def _iter(self, split: str) -> Any:
        if split not in self.iters:
            batch = self.batch if split == "train" else self.eval_batch
            self.iters[split] = self.stream.iterator(split, batch, steps=self.steps, put=True,
                                                     device=self._device(),
                                                     workers=split == "train")
            if split in self.pending:
                self.iters[split].set_state(self.pending.pop(split))
        return self.iters[split]

    def _blocks(self, split: str) -> Any:
        it = self._iter(split)
        batch = self.batch if split == "train" else self.eval_batch
        for _ in range(self.stream.blocks_per_epoch(split, batch, self.steps)):
            t0 = time.perf_counter()
            block = next(it)
            self.wait_s += time.perf_counter() - t0
            yield block

    def _pick(self, new: Any, old: Any, pick: np.ndarray) -> Any:
        """`new` where `pick`, else `old`, per member (the population's where program)."""
        if pick.all():
            return new
        return self.pop.keep(self.where.per_member(pick), new, old)

    def train(self, states: Any, best: Any, keep: np.ndarray, inputs: Any,
              active: jax.Array) -> tuple:
        i = inputs
        if keep.any():  # a new tree (the blocks donate the states)
            best = self.pop.keep(self.where.per_member(keep), states.params, best)
        sums = self.where.per_member((np.zeros(i.size, np.float32),) * 2)
        flight: deque = deque()
        for xs, ys, ws in self._blocks("train"):
            states, sums = self.block(states, i.hp, active, sums, xs, ys, ws, i.seeds, i.owner)
            flight.append(sums)
            if len(flight) > self.IN_FLIGHT:
                jax.block_until_ready(flight.popleft())
        return states, best, self.finish(states, sums)

    def evaluate(self, new: Any, old: Any, pick: np.ndarray, inputs: Any, split: str) -> dict:
        params, size = self._pick(new, old, pick), inputs.size
        totals = self.where.per_member((np.zeros(size, np.float32),) * 2)
        for xs, ys, ws in self._blocks(split):
            totals = self.eval_block(totals, params, inputs.hp, xs, ys, ws)
        if split == "test":  # read once at the end: its threads end with it
            self.iters.pop("test").close()
        n = len(getattr(self.stream, split))
        return {"loss": totals[0] / n, "accuracy": totals[1] / n}

    def state(self) -> dict:
        return {"data": {s: self.iters[s].get_state() for s in ("train", "val")
                         if s in self.iters}}

    def restore(self, state: dict) -> None:
        self.close()
        self.pending = dict(state.get("data") or {})

    def close(self) -> None:
        for it in self.iters.values():
            it.close()
        self.iters = {}


def make(ds: Any, pop: Population, place: Any) -> Feed:
    return Streamed(ds, pop, place) if isinstance(ds, Stream) else OnDevice(ds, pop, place)


def check(cfg: Config, ds: Any) -> None:
    """What streamed data cannot serve, refused before anything compiles."""
    if isinstance(ds, Stream) and host_metrics.requested(cfg):
        raise ConfigError("task.host_metrics", list(host_metrics.requested(cfg)),
                          "needs the val and test labels in memory: streamed data reports the "
                          "compiled metrics only (set data.stream=false for these)")
