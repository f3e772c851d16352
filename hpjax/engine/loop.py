"""The epoch loop: every population trains here, epoch by epoch, driven by a Scheduler.

After every epoch (one compiled call for all members) the host records each member's metrics: a
member that diverged (NaN/inf loss) or stopped early is frozen (its state stops updating, its best
epoch's parameters are kept, and nothing it does reaches another member). Then each trial that
trained is reported to the scheduler (`hpjax.engine.schedulers.base.Scheduler`), whose decision
the loop applies: continue, stop (`pruned`), copy another trial with new values (PBT), or pause
at this boundary. A population with a paused trial trains on only once the scheduler lets it;
`drive` meanwhile trains the other populations, so that a scheduler sees a whole bracket reach a
rung whatever population each of its trials trains in. Slots freed by trials that ended take the
scheduler's new trials (`Scheduler.refill`). With checkpoints, a population continues from the
latest epoch all its members saved, and the scheduler from the state saved with them.
"""

import logging
from collections.abc import Callable, Hashable
from typing import Any, Optional

from hpjax.config import Config
from hpjax.engine import signals
from hpjax.engine.compile import CompileStats
from hpjax.engine.hparams import signature
from hpjax.engine.member import epoch_report
from hpjax.engine.progress import EpochReport, log_report
from hpjax.engine.schedulers import base
from hpjax.engine.schedulers.pbt import value_of
from hpjax.engine.state import NewMember, PopulationRun, check_fits  # noqa: F401
from hpjax.results import Outcome

log = logging.getLogger("hpjax")

_Run = PopulationRun  # (the name scripts and tests patch)


class Training:
    """One population's training, advanced by `advance` until it ends or waits for the
    scheduler. Its device state is built at the first `advance`: a population that never
    waits trains to its end before the next one of `drive` allocates anything."""

    def __init__(self, cfgs: list[Config], *, trials: Optional[list] = None,
                 folds: Optional[list[int]] = None, launcher: str = "basic",
                 on_epoch: Optional[Callable[[int, dict], None]] = None,
                 on_progress: Optional[Callable[[EpochReport], None]] = None,
                 checkpoint_dirs: Optional[list[str]] = None,
                 params_paths: Optional[list[Optional[str]]] = None,
                 scheduler: Optional[base.Scheduler] = None,
                 join: Optional[Callable[[int], list[NewMember]]] = None,
                 on_left: Optional[Callable[[int, Outcome], None]] = None,
                 pad_to_compiled: bool = False) -> None:
        assert all(signature(c) == signature(cfgs[0]) for c in cfgs), \
            "one signature per population"
        self.cfgs, self.trials = cfgs, list(range(len(cfgs))) if trials is None else trials
        self.folds = list(folds) if folds is not None else [0] * len(cfgs)
        self.launcher, self.on_epoch, self.on_left = launcher, on_epoch, on_left
        self.on_progress = on_progress or (log_report if len(cfgs) > 1 else None)
        self.checkpoint_dirs, self.params_paths = checkpoint_dirs, params_paths
        self.scheduler, self.join = scheduler, join
        self.pad = pad_to_compiled and join is None and scheduler is None
        self.run: Optional[PopulationRun] = None
        self.epoch = 0  # the population's epochs trained
        self.waiting: set = set()  # trials paused by the scheduler
        self.exhausted = join is None  # no new trials will join
        self.compile_s0 = 0.0

    def _start(self) -> None:
        CompileStats.install()
        self.compile_s0 = CompileStats.seconds
        self.run = run = PopulationRun(self.cfgs, self.folds, self.launcher,
                                       self.checkpoint_dirs, self.params_paths,
                                       refilled=self.join is not None, pad=self.pad,
                                       trials=self.trials, scheduler=self.scheduler)
        explores = self.scheduler.explores if self.scheduler is not None else ()
        for member in run.members if explores else ():  # PBT's record, from its first epoch
            member.lineage, member.root = [], member.trial
            member.schedule = [{"epoch": 1, "train.seed": member.cfg.train.seed,
                                **{key: value_of(member.cfg, key) for key in explores}}]
        self.epoch = run.resume() - 1
        if self.epoch > 0:
            for k, member in enumerate(run.members if self.on_epoch else ()):
                for row in member.outcome.rows:
                    self.on_epoch(k, row)
            # continued: trials that waited at this boundary when the checkpoint was saved
            if self.scheduler is not None:
                self.waiting = {m.trial for m in run.members if m.active and m.slot is not None}

    def advance(self) -> bool:
        """Trains until every member has ended (True) or a trial waits for the scheduler
        (False: call again once other populations have trained)."""
        if self.run is None:
            self._start()
        run = self.run
        while True:
            if self.waiting:  # between epochs: this population waited for others
                exploits: list = []
                settled = self._settle(exploits)
                if exploits:
                    run.exploit(self.epoch, exploits)
                if not settled:
                    return False
                if self.exhausted:
                    run.compact(self.epoch)
            if not self.exhausted:
                self._refill()
            if not any(m.active for m in run.members):
                return True
            self.epoch += 1
            self._train_epoch()

    def finish(self) -> list[Outcome]:
        """Test metrics at each member's best epoch, and the results' numbers."""
        return self.run.finish(CompileStats.seconds - self.compile_s0)

    def suspend(self) -> list:
        """Leaves this process while trials wait for the scheduler (whose other trials train
        elsewhere): every member saves a checkpoint at this boundary, then each active trial
        stops as a rung's `Stop` would stop it, without telling the scheduler. Its outcome
        (`finish`) is final if the scheduler stops it; if not, a later run of the trial
        continues from the checkpoint, where it is still running and waits again. Returns the
        trials it stopped."""
        run = self.run
        missing = [m.trial for m in run.members if m.active and not m.checkpoint_dir]
        if missing:
            raise RuntimeError(f"trials {missing} wait for the scheduler but save no "
                               "checkpoint to continue from: set train.checkpoint_every")
        run.save(self.epoch, now=True)
        trials = list(dict.fromkeys(m.trial for m in run.members if m.active))
        for member in run.members:
            if member.active:
                member.prune(self.epoch - member.offset, "suspended: waits for its scheduler")
        self.waiting.clear()
        return trials

    # -- one epoch -----------------------------------------------------------------------------
    def _train_epoch(self) -> None:
        run, epoch = self.run, self.epoch
        run.apply_schedules(epoch)
        trained = [k for k in run.slots if run.members[k].active]
        run.epoch(epoch, self.on_epoch)
        exploits: list = []
        if self.scheduler is not None:
            self._report(trained, exploits)
            self._settle(exploits)
        if self.on_progress is not None:
            self.on_progress(epoch_report(epoch, run.members))
        for k in trained:  # done: its slot is free
            member = run.members[k]
            if member.active and epoch - member.offset >= member.cfg.train.epochs:
                member.active = False
        if not any(m.active for m in run.members):
            return
        if exploits:
            run.exploit(epoch, exploits)
        stop = signals.requested() is not None  # SIGINT/SIGTERM: checkpoint, then stop
        run.save(epoch, now=stop)
        signals.check()
        if self.scheduler is not None and self.exhausted:
            run.compact(epoch)

    def _report(self, trained: list[int], exploits: list) -> None:
        """Each trial that trained this epoch, to the scheduler; its decision applied."""
        run, scheduler = self.run, self.scheduler
        by_trial: dict[Hashable, list[int]] = {}
        for k in trained:
            by_trial.setdefault(run.members[k].trial, []).append(k)
        for trial, ks in by_trial.items():
            own = [run.members[k] for k in ks]
            at = self.epoch - own[0].offset  # the trial's own epoch
            metric = own[0].cfg.objective.metric
            ok = all(m.result.status != "diverged" and m.tracker.epoch is not None for m in own)
            rows = [m.outcome.rows[-1] for m in own if m.outcome.rows
                    and m.outcome.rows[-1]["epoch"] == at]
            ended = not any(m.active for m in own) or at >= own[0].cfg.train.epochs
            result = base.TrialResult(
                at, sum(r[metric] for r in rows) / len(rows) if ok and rows else None,
                sum(m.tracker.row[metric] for m in own) / len(own) if ok else None,
                last=ended, values={key: value_of(own[0].cfg, key)
                                    for key in scheduler.explores})
            decision = scheduler.on_trial_result(trial, result)
            if ended:
                scheduler.on_trial_complete(trial, result)
            elif isinstance(decision, base.Pause):
                self.waiting.add(trial)
            else:
                self._apply(trial, decision, exploits)

    def _settle(self, exploits: list) -> bool:
        """Asks the scheduler again about the trials that wait; True once none waits."""
        for trial in sorted(self.waiting, key=repr):
            decision = self.scheduler.decide(trial)
            if not isinstance(decision, base.Pause):
                self.waiting.discard(trial)
                self._apply(trial, decision, exploits)
        return not self.waiting

    def _apply(self, trial: Hashable, decision: base.Decision, exploits: list) -> None:
        run = self.run
        if isinstance(decision, base.Stop):
            for member in run.members:
                if member.trial == trial and member.active:
                    member.prune(self.epoch - member.offset, decision.reason)
            log.debug("trial %s pruned after epoch %d: %s", trial, self.epoch, decision.reason)
            self.scheduler.on_trial_complete(trial, None)
        elif isinstance(decision, base.Exploit):
            ks = [k for k, m in enumerate(run.members) if m.slot is not None]
            donor = [k for k in ks if run.members[k].trial == decision.donor]
            mine = [k for k in ks if run.members[k].trial == trial]
            assert len(donor) == 1 and len(mine) == 1, \
                "Exploit copies a trial of one member in the same population"
            exploits.append((donor[0], mine[0], decision.values))

    def _refill(self) -> None:
        """Free slots take new trials; once fewer come than asked, none are asked again."""
        run = self.run
        free = run.free_slots()
        if not free:
            return
        new = self.join(len(free))[:len(free)]
        self.exhausted = len(new) < len(free)
        if not new:
            return
        left = run.vacate(free[:len(new)])
        for k in left if self.on_left is not None else ():
            self.on_left(k, run.finish_member(run.members[k], (
                CompileStats.seconds - self.compile_s0) / len(run.members)))
        run.join(free[:len(new)], new, self.epoch)
        log.info("epoch %d: %d new member%s in freed slots", self.epoch, len(new),
                 "" if len(new) == 1 else "s")


def drive(trainings: list[Any], on_done: Callable[[Any], Optional[list]],
          suspend: bool = False) -> None:
    """Advances each training in turn until each has ended (`on_done(training)`, in the
    order they end, which may give trainings to take its place). One that waits for the
    scheduler yields to the next; a scheduler that lets none of the waiting go on is a bug in
    it, raised here, unless `suspend`: the scheduler waits for trials that train elsewhere (a
    bracket trained rung by rung in several processes), and every training then suspends
    (`Training.suspend`) and ends."""
    pending = list(trainings)
    trainings = []  # an ended training is freed as soon as it leaves `pending`
    while pending:
        moved = False
        for t in list(pending):
            before = (t.run is None, t.epoch, len(t.waiting))
            if t.advance():
                at = pending.index(t)
                pending[at:at + 1] = on_done(t) or []
                moved = True
            moved = moved or before != (t.run is None, t.epoch, len(t.waiting))
        if not moved and pending and suspend:
            for t in pending:
                t.suspend()
        elif not moved and pending:
            raise RuntimeError("the scheduler keeps every population waiting: its trials "
                               f"{sorted({x for t in pending for x in t.waiting}, key=repr)} "
                               "wait for trials that are not training")


def train_population(cfgs: list[Config], *, folds: Optional[list[int]] = None,
                     launcher: str = "basic",
                     on_epoch: Optional[Callable[[int, dict], None]] = None,
                     on_progress: Optional[Callable[[EpochReport], None]] = None,
                     checkpoint_dirs: Optional[list[str]] = None,
                     params_paths: Optional[list[Optional[str]]] = None,
                     scheduler: Optional[base.Scheduler] = None,
                     trials: Optional[list] = None,
                     join: Optional[Callable[[int], list[NewMember]]] = None,
                     on_left: Optional[Callable[[int, Outcome], None]] = None,
                     pad_to_compiled: bool = False) -> list[Outcome]:
    """Trains configs of one signature together; returns one `Outcome` per config (then one
    per member that joined), in order.

    Args:
      cfgs: validated configs whose `hpjax.engine.hparams.signature` is the same.
      folds: with `data.cv_folds` > 1, the fold each config trains on (default: fold 0).
      launcher: recorded in each result.
      on_epoch: called with (member index, metrics row) after every epoch of a running member.
      on_progress: called with the population's `EpochReport` after every epoch; by default a
        population of several members logs it.
      checkpoint_dirs: one folder per member, where a member with `train.checkpoint_every` > 0
        saves its state; a population whose members all saved an epoch continues from there.
      params_paths: one file (or None) per member, where its best epoch's variables are saved
        when it leaves the population (`hpjax.engine.checkpoint.save_params`).
      scheduler: decides after every epoch which trials go on (`Scheduler`); None: all train
        to the end. Its trials are `trials` (one per member; default: the members' indices),
        added to it here.
      join: called with a number of free slots at each epoch boundary, returns at most that
        many new members (`NewMember`), which train from their own fresh state in the slots of
        members that ended. `on_left(member index, outcome)`: a member that left its slot to
        a new one, its outcome final.
      pad_to_compiled: without a scheduler or joins, pad the population to a larger size its
        program already ran at in this process (`population.compiled_size`: a sweep's smaller
        last batch), instead of compiling its own size.
    Raises:
      ConfigError: the data cannot be loaded or does not fit the config (before any compile).
    """
    training = Training(cfgs, trials=trials, folds=folds, launcher=launcher, on_epoch=on_epoch,
                        on_progress=on_progress, checkpoint_dirs=checkpoint_dirs,
                        params_paths=params_paths, scheduler=scheduler, join=join,
                        on_left=on_left, pad_to_compiled=pad_to_compiled)
    for trial in dict.fromkeys(training.trials) if scheduler is not None else ():
        scheduler.on_trial_add(trial)
    outcomes: list = []
    drive([training], lambda t: outcomes.extend(t.finish()))
    return outcomes


__all__ = ["NewMember", "Training", "check_fits", "drive", "train_population"]
