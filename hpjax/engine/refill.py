"""Refilled populations: a slot whose member ended (pruned, stopped early, diverged, or done)
takes a new member at the next epoch boundary, so the population keeps its size.

The new member starts from its own fresh state (parameters, optimizer state and PRNG keys drawn
from its `train.seed`, as it would be trained alone) while the others go on: each member counts
its own epochs, and so its learning-rate schedule and data order. Each member draws its dropout
noise from a seed row of its own, so members at different epochs share one program: a refilled
population compiles nothing new after its first refill. When no new member comes (the sweep
has asked its `n_trials`), the population is gathered smaller as its members end, as under
successive halving.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import jax
import numpy as np

from hpjax.config import Config
from hpjax.engine import checkpoint, signals
from hpjax.engine.hparams import hparams

log = logging.getLogger("hpjax")


@dataclass(frozen=True)
class NewMember:
    """A member that takes a free slot: its config and where it keeps its files."""

    cfg: Config
    fold: int = 0
    checkpoint_dir: Optional[str] = None
    params_path: Optional[str] = None


def free_slots(run) -> list[int]:  # noqa: ANN001  (a `hpjax.engine.loop._Run`)
    """Slots whose member no longer trains, then the padding slots."""
    return [s for s, k in enumerate(run.slots) if not run.members[k].active] + list(
        range(len(run.slots), run.inputs.size))


def vacate(run, slots: list[int]) -> list[int]:  # noqa: ANN001
    """The members in `slots` leave: their test metrics (at their best epoch) and best
    variables are taken now. Returns their indices."""
    held = [s for s in slots if s < len(run.slots)]
    if not held:
        return []
    test = run.test_metrics()
    run.host_metrics(held)
    run.save_params(held)
    left = []
    for s in held:
        left.append(run.slots[s])
        member = run.members[run.slots[s]]
        member.test = {n: float(v[s]) for n, v in test.items()}
        member.slot = None
    return left


def join(run, slots: list[int], new: list[NewMember], epoch: int) -> None:  # noqa: ANN001
    """New members take `slots` (free) after the population's `epoch`: fresh state from their
    own seeds, the others' state untouched. Shapes do not change, so nothing compiles anew."""
    i, place = run.inputs, run.place
    hp = jax.tree.map(np.array, jax.device_get(i.hp))
    fold, seeds = np.array(jax.device_get(i.fold)), np.array(jax.device_get(i.seeds))
    for s, nm in zip(slots, new, strict=True):
        values = hparams(nm.cfg)

        def put(a: np.ndarray, v: object, s: int = s) -> np.ndarray:
            a[s] = v
            return a

        hp = jax.tree.map(put, hp, values)
        fold[s], seeds[s] = nm.fold, nm.cfg.train.seed
        if nm.checkpoint_dir and nm.cfg.train.checkpoint_every:
            checkpoint.clear(nm.checkpoint_dir)  # a new trial: nothing to continue from
        member = run.new_member(nm.cfg, nm.fold, nm.checkpoint_dir, nm.params_path)
        member.slot, member.offset = s, epoch
        run.members.append(member)
        if s < len(run.slots):
            run.slots[s] = len(run.members) - 1
        else:
            assert s == len(run.slots), "padding slots fill in order"
            run.slots.append(len(run.members) - 1)
    hp, fold = place.per_member(hp), place.per_member(fold)
    seeds = place.shared(seeds)
    fresh = run.pop.init(hp, seeds, i.owner)
    mask = place.per_member(np.isin(np.arange(i.size), slots))
    run.states = run.pop.keep(mask, fresh, run.states)
    run.best_params = run.pop.keep(mask, fresh.params, run.best_params)
    run.inputs = type(i)(hp, fold, seeds, i.owner, i.size)


def train(run, refill: Callable[[int], list[NewMember]], start: int, *,  # noqa: ANN001
          on_epoch: Optional[Callable] = None, stopper: Optional[Callable] = None,
          on_progress: Optional[Callable] = None, on_left: Optional[Callable] = None,
          compile_s0: float = 0.0) -> None:
    """The host loop of a refilled population, from epoch `start`: before each epoch, free
    slots are offered to `refill`; after it, members that reached their `train.epochs` end.
    Once `refill` gives fewer than asked, no more are asked and the population is gathered
    smaller as its members end. `on_left(member index, outcome)`: a member that left its slot
    to a new one, its result final (its compile time: its share so far)."""
    from hpjax.engine.compile import CompileStats
    from hpjax.engine.member import epoch_report

    epoch, exhausted = start - 1, False
    while True:
        free = [] if exhausted else free_slots(run)
        if free:
            new = refill(len(free))[:len(free)]
            exhausted = len(new) < len(free)
            if new:
                left = vacate(run, free[:len(new)])
                for k in left if on_left is not None else ():
                    on_left(k, run.finish_member(run.members[k], (
                        CompileStats.seconds - compile_s0) / len(run.members)))
                join(run, free[:len(new)], new, epoch)
                log.info("epoch %d: %d new member%s in freed slots", epoch, len(new),
                         "" if len(new) == 1 else "s")
        if not any(m.active for m in run.members):
            break
        epoch += 1
        run.epoch(epoch, on_epoch)
        if stopper is not None:
            for k in stopper(epoch, run.members):
                run.members[k].prune(epoch)
        for member in run.members:  # done: its slot is free
            if member.active and epoch - member.offset >= member.cfg.train.epochs:
                member.active = False
        if on_progress is not None:
            on_progress(epoch_report(epoch, run.members))
        stop = signals.requested() is not None
        run.save(epoch, now=stop)
        signals.check()
        if exhausted:
            run.compact(epoch)


__all__ = ["NewMember", "free_slots", "join", "train", "vacate"]
