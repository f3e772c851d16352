"""A population's state while it trains (`PopulationRun`): the compiled functions, the device
arrays, what the host knows of each member, and what the epoch loop (`hpjax.engine.loop`) does to
it: train an epoch, gather members into fewer slots, copy members (PBT), give a freed slot to a
new member (from its own fresh state: each member counts its own epochs, and draws its dropout
noise from a seed row of its own, so members at different epochs share one program), save and
restore checkpoints (`hpjax.engine.resume`)."""

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import jax
import numpy as np

from hpjax import data as data_lib
from hpjax.config import Config, ConfigError
from hpjax.engine import checkpoint, feed, host_metrics, population, resume, trainer
from hpjax.engine.compile import CompileStats
from hpjax.engine.hparams import hparams
from hpjax.engine.member import BestEpoch, Member, scheduled
from hpjax.engine.schedulers import pbt as pbt_lib
from hpjax.results import Outcome, Result

log = logging.getLogger("hpjax")


@dataclass(frozen=True)
class NewMember:
    """A member that takes a free slot: its config, trial and where it keeps its files."""

    cfg: Config
    trial: Any
    fold: int = 0
    checkpoint_dir: Optional[str] = None
    params_path: Optional[str] = None


def check_fits(cfg: Config, ds: data_lib.Dataset) -> None:
    """The checks that need the data: run before anything compiles."""
    n, steps = ds.n_train, cfg.train.steps_per_epoch
    if not isinstance(ds, data_lib.Stream) and steps is not None:
        raise ConfigError("train.steps_per_epoch", steps, "counts the steps of streamed data; "
                          "with the splits on the device an epoch is one pass over the training "
                          "split (set data.stream=true, or train.steps_per_epoch=null)")
    if n is None and steps is None:
        raise ConfigError("train.steps_per_epoch", None, "must be set for an endless train "
                          f"split ({type(ds.train).__name__}, without a length): an epoch is "
                          "then that many steps")
    if n is not None and cfg.train.batch_size > n:
        raise ConfigError("train.batch_size", cfg.train.batch_size,
                          f"must be an integer between 1 and the training-set size {n}")
    rank = type(cfg.model).input_rank
    if rank is not None and len(ds.input_shape) != rank:
        shape = "[height,width,channels]" if rank == 3 else "[length,channels]"
        raise ConfigError("model", cfg.model.name, f"needs samples of rank {rank}: set "
                          f"data.image_shape={shape} (the digits set has an image shape, "
                          "mnist1d a signal's)")


def _fixed_activation(cfgs: list[Config]) -> Optional[int]:
    """The activation a large population's members all share, fixed in its program; small
    populations keep it traced, so one program serves them all."""
    shared = {c.activation.index for c in cfgs}
    return shared.pop() if len(cfgs) >= population.FIXED_ACTIVATION_FROM and len(
        shared) == 1 else None


_SPLITS_SHOWN: set[tuple[int, int]] = set()  # (members, devices) of the splits logged


class PopulationRun:
    """One population's training: the compiled functions, the device state and the members.
    `trials`: each member's trial (the scheduler's name for it); `refilled`: slots are given to
    new members as others leave; `scheduler`: its state is saved with each checkpoint."""

    def __init__(self, cfgs: list[Config], folds: list[int], launcher: str,
                 checkpoint_dirs: Optional[list[str]],
                 params_paths: Optional[list[Optional[str]]] = None,
                 refilled: bool = False, pad: bool = False, trials: Optional[list] = None,
                 scheduler: Any = None) -> None:
        cfg0 = cfgs[0]
        self.launcher = launcher
        self.ds = ds = data_lib.load(cfg0.data, cfg0.task.name == "regression")
        check_fits(cfg0, ds)
        feed.check(cfg0, ds)
        # a refilled slot may take any activation: it stays traced
        self.pop = population.get(cfg0, ds, None if refilled else _fixed_activation(cfgs))
        # `pad`: a size this program already ran at, when larger (a sweep's smaller last batch)
        size = population.compiled_size(self.pop, len(cfgs)) if pad else \
            population.padded_size(len(cfgs))
        self.place = population.Placement.of(size)
        if self.place.devices > 1:
            split = (size, self.place.devices)
            # once per process at INFO: a sweep's every batch would repeat it
            log.log(logging.DEBUG if split in _SPLITS_SHOWN else logging.INFO,
                    "population of %d split over %d devices", *split)
            _SPLITS_SHOWN.add(split)
        self.inputs = population.stack(cfgs, folds, self.place, own_rows=refilled, size=size)
        self.feed = feed.make(ds, self.pop, self.place)  # arrays on the device, or a stream
        dirs = checkpoint_dirs or [None] * len(cfgs)
        self.restored: list[dict] = []  # the members' checkpoint records, when continued
        self.scheduler = scheduler
        self.members = [self.new_member(c, f, d, p)
                        for c, f, d, p in zip(cfgs, folds, dirs,
                                              params_paths or [None] * len(cfgs), strict=True)]
        for k, member in enumerate(self.members):
            member.slot, member.trial = k, k if trials is None else trials[k]
        self.slots = list(range(len(cfgs)))  # the member in each slot (padding excluded)
        i = self.inputs
        # the epoch and evaluation compile while the init does (a size not compiled yet)
        self.ahead = [] if i.size in self.pop.sizes else self.feed.ahead(
            jax.eval_shape(self.pop.init, i.hp, i.seeds, i.owner), i)
        # Placed as the epoch returns it, so that the epoch program compiles once.
        self.states = self.place.per_member(self.pop.init(i.hp, i.seeds, i.owner))
        self.best_params = population.copy(self.states.params)

    def compiled(self) -> None:
        """Waits for the programs compiling ahead (a call meanwhile would compile its own)."""
        for future in self.ahead:
            future.result()
        self.ahead = []

    # Each member's best variables are `states.params` where `improved` (its last epoch was its
    # best so far: the next epoch's program keeps them), else `_best`.
    @property
    def best_params(self) -> Any:
        """Each member's best variables, as one tree (a path that needs the tree itself:
        checkpoints, PBT, compaction, refills; it runs the population's where program)."""
        if self.improved.any():
            self._best = self.pop.keep(self.place.per_member(self.improved), self.states.params,
                                       self._best)
            self.improved = np.zeros_like(self.improved)
        return self._best

    @best_params.setter
    def best_params(self, tree: Any) -> None:
        self._best = tree
        self.improved = np.zeros(jax.tree.leaves(tree)[0].shape[0], bool)

    def new_member(self, cfg: Config, fold: int, checkpoint_dir: Optional[str],
                   params_path: Optional[str]) -> Member:
        return Member(cfg, Outcome(Result(
            "ok", None, cfg.objective.metric, cfg.objective.mode, seed=cfg.train.seed,
            launcher=self.launcher, fold=fold if self.ds.folds else None)),
            BestEpoch(cfg.train.early_stopping),
            checkpoint_dir if cfg.train.checkpoint_every else None, params_path, origin=repr(cfg))

    def active_mask(self) -> np.ndarray:
        return np.array([self.members[k].active for k in self.slots]
                        + [False] * (self.inputs.size - len(self.slots)))

    def compact(self, epoch: Optional[int] = None) -> None:
        """Gathers the active members into the smallest power of two that holds them, once at
        most half the slots train: frozen members stop costing compute. Each population size
        compiles its program once. The members that leave take their test metrics along, and
        those with checkpoints save a last one after `epoch`, marked `left`: a resumed
        population restores them from it and does not train them again."""
        keep = [s for s, k in enumerate(self.slots) if self.members[k].active]
        size = population.padded_size(max(len(keep), 1))
        if size >= self.inputs.size or not keep:
            return
        test = self.test_metrics()
        leaving = [s for s in range(len(self.slots)) if s not in keep]
        self.host_metrics([s for s in leaving if not self.members[self.slots[s]].gone])
        self.save_params(leaving)
        for s in leaving:
            member = self.members[self.slots[s]]
            if not member.gone:
                member.test = {n: float(v[s]) for n, v in test.items()}
                if member.checkpoint_dir and epoch is not None and (
                        epoch < member.cfg.train.epochs):
                    checkpoint.save(member.checkpoint_dir, epoch - member.offset,
                                    _member((self.states, self.best_params), s),
                                    {**self.meta(member), "left": True})
        for k in self.slots:
            self.members[k].slot = None
        idx = np.array(keep + keep[-1:] * (size - len(keep)), np.int32)
        i = self.inputs
        self.place = population.Placement.of(size)
        self.states, self.best_params, hp, fold, owner = self.place.per_member(self.pop.take(
            (self.states, self.best_params, i.hp, i.fold, i.owner), idx))
        self.inputs = population.Stacked(hp, fold, self.place.shared(i.seeds), owner, size)
        self.feed.place(self.place)
        self.slots = [self.slots[s] for s in keep]
        for s, k in enumerate(self.slots):
            self.members[k].slot = s
        log.info("population gathered into %d slots: %d member%s train on", size, len(keep),
                 "" if len(keep) == 1 else "s")

    def save_params(self, slots: Any) -> None:
        """Saves the best variables of the members in `slots` that keep them: the population's
        tree comes to the host once and each member is a NumPy slice of it (a jax index per
        member and leaf would dispatch a device op each: see docs/benchmarks.md)."""
        members = [(s, self.members[self.slots[s]]) for s in slots]
        members = [(s, m) for s, m in members
                   if m.params_path and m.tracker.epoch is not None and not m.gone]
        if not members:
            return
        current = self.improved[[s for s, _ in members]].any()  # a best epoch not yet kept
        new, old = jax.device_get((self.states.params if current else None, self._best))
        checkpoint.save_params([(m.params_path, jax.tree.map(
            lambda a, s=s: a[s], new if self.improved[s] else old)) for s, m in members])

    def meta(self, member: Member) -> dict:
        """A member's checkpoint record, with the data's position and the scheduler's state."""
        return {**member.meta(), **self.feed.state(), "scheduler": self.scheduler.save()
                if self.scheduler is not None else {}}

    def exploit(self, epoch: int, pairs: list[tuple[int, int, dict]]) -> None:
        """Each (donor, recipient, values) of member indices: the recipient takes the donor's
        state and tracker, its config with `values`, its lineage and schedule (PBT)."""
        members = self.members
        self.copy_members([(members[d].slot, members[r].slot) for d, r, _ in pairs])
        for d, r, values in pairs:
            donor, m = members[d], members[r]
            m.tracker = copy.deepcopy(donor.tracker)
            m.cfg = pbt_lib.with_values(donor.cfg, values)
            if donor.schedule is not None:
                m.lineage = donor.lineage + [{"epoch": epoch, "donor": donor.trial}]
                m.schedule = donor.schedule + [{"epoch": epoch + 1, **values}]
                m.root = donor.root
            self.set_hparams(m)

    def free_slots(self) -> list[int]:
        """Slots whose member no longer trains, then the padding slots."""
        return [s for s, k in enumerate(self.slots) if not self.members[k].active] + list(
            range(len(self.slots), self.inputs.size))

    def vacate(self, slots: list[int]) -> list[int]:
        """The members in `slots` leave: their test metrics (at their best epoch) and best
        variables are taken now. Returns their indices."""
        held = [s for s in slots if s < len(self.slots)]
        if not held:
            return []
        test = self.test_metrics()
        self.host_metrics(held)
        self.save_params(held)
        left = []
        for s in held:
            left.append(self.slots[s])
            member = self.members[self.slots[s]]
            member.test = {n: float(v[s]) for n, v in test.items()}
            member.slot = None
        return left

    def join(self, slots: list[int], new: list[NewMember], epoch: int) -> None:
        """New members take `slots` (free) after the population's `epoch`: fresh state from
        their own seeds, the others' state untouched. Shapes do not change, so nothing compiles
        anew."""
        i, place = self.inputs, self.place
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
            member = self.new_member(nm.cfg, nm.fold, nm.checkpoint_dir, nm.params_path)
            member.slot, member.offset, member.trial = s, epoch, nm.trial
            self.members.append(member)
            if s < len(self.slots):
                self.slots[s] = len(self.members) - 1
            else:
                assert s == len(self.slots), "padding slots fill in order"
                self.slots.append(len(self.members) - 1)
        hp, fold = place.per_member(hp), place.per_member(fold)
        seeds = place.shared(seeds)
        fresh = self.pop.init(hp, seeds, i.owner)
        mask = place.per_member(np.isin(np.arange(i.size), slots))
        best = self.best_params  # the others' best, before their slots' states change
        self.states = self.pop.keep(mask, fresh, self.states)
        self.best_params = self.pop.keep(mask, fresh.params, best)
        self.inputs = type(i)(hp, fold, seeds, i.owner, i.size)

    def copy_members(self, pairs: list[tuple[int, int]]) -> None:
        """PBT's exploit: slot `dst` takes everything of slot `src` (state, best parameters,
        traced numbers, fold, seed owner), for each (src, dst), gathered on the device."""
        idx = np.arange(self.inputs.size, dtype=np.int32)
        for src, dst in pairs:
            idx[dst] = src
        i, improved = self.inputs, self.improved[idx]  # the best as it stands, unmerged
        self.states, self.best_params, hp, fold, owner = self.place.per_member(self.pop.take(
            (self.states, self._best, i.hp, i.fold, i.owner), idx))
        self.improved = improved
        self.inputs = dataclasses.replace(i, hp=hp, fold=fold, owner=owner)

    def set_hparams(self, member: Member) -> None:
        """Gives the member's slot the traced numbers of `member.cfg` (PBT's explore, a
        replayed schedule): in the inputs and in the optimizer state, so nothing recompiles."""
        s, new = member.slot, hparams(member.cfg)
        hp = jax.device_get(self.inputs.hp)
        hp = jax.tree.map(lambda a, v: np.where(np.arange(a.shape[0]) == s, v, a), hp, new)
        numbers = {**new["optimizer"],
                   **{trainer._SCHEDULE + k: v for k, v in new.get("schedule", {}).items()}}
        opt = self.states.opt_state
        hyper = {k: np.where(np.arange(v.shape[0]) == s, numbers[k], v)
                 for k, v in jax.device_get(opt.hyperparams).items()}
        self.states = self.states.replace(opt_state=opt._replace(
            hyperparams=self.place.per_member(hyper)))
        self.inputs = dataclasses.replace(self.inputs, hp=self.place.per_member(hp))

    def apply_schedules(self, epoch: int) -> None:
        """`train.hparam_schedule` entries that start at `epoch`."""
        for member in self.members:
            values = scheduled(member.cfg, epoch - member.offset)
            if values and member.slot is not None:
                member.cfg = pbt_lib.with_values(member.cfg, values)
                self.set_hparams(member)

    def test_metrics(self) -> dict:
        """Every slot's test metrics at its best epoch's parameters."""
        self.compiled()
        return jax.device_get(self.feed.evaluate(self.states.params, self._best, self.improved,
                                                 self.inputs, "test"))

    def host_metrics(self, slots: Any) -> None:
        """The host metrics (`hpjax.engine.host_metrics`) of the members in `slots` that ask
        for any, from their best epoch's predictions of the validation and test splits (one
        compiled pass of the whole population per split), into `Member.host`."""
        wanted = {}
        for s in slots:
            member = self.members[self.slots[s]]
            names = host_metrics.requested(member.cfg)
            if names and member.tracker.epoch is not None:
                wanted[s] = (member, names)
        if not wanted:
            return
        ds, i = self.ds, self.inputs
        task = self.members[0].cfg.task.name
        fold = np.asarray(jax.device_get(i.fold))
        pick = self.place.per_member(self.improved)
        for split in ("val", "test"):
            # padded as the evaluation's splits are: one program for both
            x, _, n = population.eval_split(ds, split, self.pop.spec.cfg.train.eval_batch_size)
            y = getattr(ds, f"y_{split}")
            out = np.asarray(jax.device_get(self.pop.predict(
                self.states.params, self._best, pick, i.hp, i.fold, self.place.shared(x))))
            for s, (member, names) in wanted.items():
                truth, pred = (y[fold[s]] if ds.folds else y), out[s, :n]
                if ds.y_std is not None:  # regression: in the targets' own units
                    truth = truth.reshape(pred.shape) * ds.y_std + ds.y_mean
                    pred = pred * ds.y_std + ds.y_mean
                member.host.update({f"{split}/{k}": v for k, v in host_metrics.score(
                    task, names, truth, pred).items()})

    def resume(self) -> int:
        """The first epoch to train: after the members' latest common checkpoint, else 1 (and
        the members' old checkpoints are cleared)."""
        dirs = [m.checkpoint_dir for m in self.members]
        if not any(dirs):
            return 1
        resumed = resume.restore(self, dirs) if all(dirs) else None
        if resumed is None:
            for d in filter(None, dirs):
                checkpoint.clear(d)
            return 1
        return resumed + 1

    def epoch(self, epoch: int, on_epoch: Any) -> None:
        """Trains every active member one epoch and records its metrics."""
        self.compiled()
        i, active = self.inputs, self.active_mask()
        c0, t0 = CompileStats.seconds, time.perf_counter()
        self.states, self._best, m = self.feed.train(self.states, self._best, self.improved, i,
                                                     self.place.per_member(active))
        self.improved = np.zeros(i.size, bool)
        self.pop.sizes.add(i.size)
        jax.block_until_ready(self.states)
        t1 = time.perf_counter()
        val = self.feed.evaluate(self.states.params, self._best, np.ones(i.size, bool), i, "val")
        m = jax.device_get(m) | {f"val/{k}": v for k, v in jax.device_get(val).items()}
        compiling = CompileStats.seconds - c0
        running = int(active.sum())
        epoch_s = max(time.perf_counter() - t0 - compiling, 0.0) / running
        improved = np.zeros(i.size, bool)
        for s in np.flatnonzero(active):
            k = self.slots[s]
            member = self.members[k]
            own = epoch - member.offset  # its own epoch (a refilled slot's member started later)
            member.train_s += max(t1 - t0 - compiling, 0.0) / running
            row = {"epoch": own, **{n: float(v[s]) for n, v in m.items() if n != "finite"},
                   "epoch_time_s": round(epoch_s, 6)}
            improved[s] = member.record(own, row, bool(m["finite"][s]))
            if on_epoch:
                on_epoch(k, row)
        self.improved = improved  # kept by the next epoch's program

    def save(self, epoch: int, now: bool = False) -> None:
        for member in self.members:
            if member.slot is not None and not member.gone and member.saves_at(
                    epoch - member.offset, now):
                checkpoint.save(member.checkpoint_dir, epoch - member.offset,
                                _member((self.states, self.best_params), member.slot),
                                self.meta(member))

    def finish(self, compile_s: float) -> list[Outcome]:
        """Test metrics at each member's best epoch, and the results' numbers."""
        test = self.test_metrics()
        self.host_metrics(range(len(self.slots)))
        self.save_params(range(len(self.slots)))
        for member in self.members:
            if member.slot is not None and not member.gone:
                member.test = {n: float(v[member.slot]) for n, v in test.items()}
            self.finish_member(member, compile_s / len(self.members))
        self.feed.close()
        return [m.outcome for m in self.members]

    def finish_member(self, member: Member, compile_s: float) -> Outcome:
        """The result's numbers of a member whose test metrics are taken (`member.test`)."""
        num_params = sum(int(np.prod(p.shape[1:]))
                         for p in jax.tree.leaves(self.states.params["params"]))
        samples_per_epoch = self.pop.spec.steps_per_epoch * self.pop.spec.batch_size
        r, tracker = member.result, member.tracker
        if tracker.epoch is not None:
            host = member.host
            r.test = {**{f"test/{n}": v for n, v in member.test.items()},
                      **{n: v for n, v in host.items() if n.startswith("test/")}}
            r.best_epoch = tracker.epoch
            r.best = {**{n: v for n, v in tracker.row.items() if n != "epoch"},
                      **{n: v for n, v in host.items() if n.startswith("val/")}}
        if r.status in ("ok", "pruned") and tracker.epoch is not None:
            value = float(r.best[member.cfg.objective.metric])
            r.objective = value if math.isfinite(value) else None  # an undefined score
        r.compile_time_s = round(compile_s, 4)
        r.train_time_s = round(sum(row["epoch_time_s"] for row in member.outcome.rows), 4)
        r.samples_per_s = round(r.epochs_run * samples_per_epoch / member.train_s, 1) \
            if member.train_s > 0 else 0.0
        r.num_params = num_params
        r.pbt = pbt_lib.record(member)
        if member.offset:  # a refilled slot: the population's epochs before it joined
            r.population = {**(r.population or {}), "joined_epoch": member.offset}
        return member.outcome


def _member(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda a: a[k], tree)
